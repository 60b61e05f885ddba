"""Interlink engine package."""
