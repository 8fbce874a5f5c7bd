"""The store: every query, and the converters between ORM rows and domain dataclasses."""
