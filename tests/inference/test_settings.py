"""Settings derived from others."""

from __future__ import annotations

from inference.settings import InferenceSettings


def test_the_catalog_is_read_again_only_where_other_workers_write_it():
    assert InferenceSettings().catalog_refresh_s is None  # embedded: locked to one worker
    assert InferenceSettings(qdrant_url=":memory:").catalog_refresh_s is None
    server = InferenceSettings(qdrant_url="http://qdrant:6333", item_cache_ttl_s=12.0)
    assert server.catalog_refresh_s == 12.0
    # the in-memory copies: exact text retrieval, and the event encoder's item vectors
    assert InferenceSettings(qdrant_url="http://qdrant:6333", exact_retrieval_max_items=0).catalog_refresh_s == 30.0
    assert InferenceSettings(qdrant_url="http://qdrant:6333", exact_retrieval_max_items=0,
                             event_encoder=False).catalog_refresh_s is None
