"""Pipeline workers: child processes that run channel pipelines beside the reactor."""
