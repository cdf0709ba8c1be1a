"""The SQL store (SQLAlchemy 2.0 models, sessions) and blob storage."""
