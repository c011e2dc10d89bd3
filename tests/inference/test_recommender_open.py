from pathlib import Path

import pytest

from inference.recommender import open_store_waiting
from inference.settings import InferenceSettings
from inference.store import EdgeStore, StoreUnavailable


def test_a_locked_store_is_retried_until_it_is_released(tmp_path: Path):
    holder = EdgeStore(tmp_path / "qdrant")
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            holder.close()

    store = open_store_waiting(InferenceSettings(data_dir=tmp_path, store_wait_s=60), sleep=sleep)
    try:
        assert sleeps == [0.5, 1.0, 2.0]
    finally:
        store.close()


def test_a_store_that_stays_unavailable_fails_with_its_error_after_the_wait(tmp_path: Path):
    holder = EdgeStore(tmp_path / "qdrant")
    try:
        with pytest.raises(StoreUnavailable, match="qdrant"):
            open_store_waiting(InferenceSettings(data_dir=tmp_path, store_wait_s=0), sleep=lambda s: None)
    finally:
        holder.close()
