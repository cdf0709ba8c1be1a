"""The jobs: one module per kind with its handler ``run_<kind>_job(ctx) -> dict``, their parameter
classes (:mod:`worker.jobs.params`) and the handler of each kind (:mod:`worker.jobs.registry`).

Handlers import camcore (and so torch) inside the function: the web app reaches the registry
through job submission and starts without torch.
"""
