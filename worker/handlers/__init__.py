"""The infer job (:mod:`worker.handlers.inference`); the other jobs live in :mod:`worker.jobs`."""
