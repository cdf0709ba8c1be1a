from sqlalchemy import inspect


def test_migrations_create_every_table(runtime) -> None:  # type: ignore[no-untyped-def]
    tables = set(inspect(runtime.engine).get_table_names())
    assert {"collections", "images", "boxes", "jobs", "users", "api_tokens"} <= tables
