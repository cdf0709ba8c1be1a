"""The SQL store (SQLAlchemy 2.0 models, sessions) and blob storage.

- ``models/``: typed tables, one module per domain, one constraint naming convention.
- ``db``: engines (SQLite: WAL, foreign keys, busy timeout; PostgreSQL via psycopg 3), sessions.
- ``migrate``: Alembic wrappers (``upgrade``, ``downgrade``, ``current_heads``, ``head_revision``).
- ``blobs``: content-addressed local blob store; only validated keys reach the filesystem.
- ``bulk``: bulk writes (images with hash dedup, tags, boxes, proposals, concept maps) and
  optimistic-concurrency review edits (``update_box`` / ``StaleEditError``).
- ``collections_repo``: categories with stable ids, ``delete_collection`` (rows and unshared blobs).
- ``blob_refs``: which blob keys rows still reference (``*_key`` columns and JSON values).
- ``dialect``: dialect-specific insert helpers (``INSERT .. unnest`` and ``COPY`` on PostgreSQL).
"""
