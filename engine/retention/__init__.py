"""Pruning old message contents while keeping metadata and the audit chain."""
