"""The fine-tuning jobs server: OpenAI's Files and fine-tuning API on tunelab's own stages
(`tunelab jobs serve`; docs/jobs.md)."""
