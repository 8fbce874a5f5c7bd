"""Request and response models only; converters to and from domain dataclasses are named
functions next to the models they produce."""
