"""Model and tokenizer loading (hub id, local path or the embedded default)."""
