"""Subcommands of the `interlink` command, one module each."""
