"""The jobs: one module per kind, each with its parameter class and its handler ``run(ctx) -> dict``."""
