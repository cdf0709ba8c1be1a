"""camlabel worker: Celery jobs, the SQL store and blob storage. Imports camcore, never web."""
