"""Database layer: engine, ORM rows, the store (queries and converters), migrations."""
