"""Data preparation: readers, formats, cleaning, validation, PII, deduplication, splitting,
the chat-template audit and the report. `prepare.run()` ties them together."""
