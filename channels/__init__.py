"""Interlink channels package."""
