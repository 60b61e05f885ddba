"""Destination queues: claim in order, send, retry with backoff, dead-letter (promise 3)."""
