"""Queue machinery: the Celery app, the one task that runs a job, sending, leases, the watchdog and the embedded worker."""
