"""Device data at run time: readings seen (de-duplication), devices tracked (silence)."""
