"""The response cache: keys cover the whole request, the least recently used entry goes first."""
from tunelab.serve.cache import ResponseCache, request_key


def test_the_key_covers_endpoint_version_and_every_field_but_not_key_order():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    same = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert request_key("/v1/chat/completions", "v1", body) == request_key("/v1/chat/completions", "v1", same)
    assert request_key("/v1/chat/completions", "v1", body) != request_key("/v1/chat/completions", "v2", body)
    assert request_key("/v1/chat/completions", "v1", body) != request_key("/v1/completions", "v1", body)
    assert request_key("/v1/chat/completions", "v1", body) != request_key(
        "/v1/chat/completions", "v1", {**body, "max_tokens": 3})


def test_lru_bound_evicts_the_least_recently_used_and_counts_hits():
    cache = ResponseCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)
    assert cache.hit_rate() == 0.75


def test_size_zero_disables_the_cache():
    cache = ResponseCache(0)
    cache.put("a", 1)
    assert not cache.enabled and cache.get("a") is None and len(cache) == 0
