"""Interlink mllp package."""
