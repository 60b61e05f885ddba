"""HL7 v2 knowledge: header reading, lazy field access, acknowledgments, batches."""
