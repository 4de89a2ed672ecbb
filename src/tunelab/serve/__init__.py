"""Serving: OpenAI-compatible HTTP API, batching, cache, input guard, model registry, prediction log."""
