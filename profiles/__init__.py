"""Interlink profiles package."""
