"""stream/cli.py commands that need neither a broker nor a model: `streamrec index`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.recommender import ITEMS
from inference.state_blobs import StateBlobs
from inference.store import Point, open_store
from stream import cli


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("STREAMREC_QDRANT_URL", raising=False)
    return tmp_path


def fill(data_dir: Path, collection: str, n: int) -> None:
    rng = np.random.default_rng(0)
    with open_store(url=None, api_key=None, data_dir=data_dir) as store:
        store.ensure_collection(collection, 8)
        store.upsert(collection, [Point(f"i{i}", rng.standard_normal(8).astype(np.float32), {}) for i in range(n)])
        StateBlobs(store).put("serving", {"version": "v2", "collections": {"v1": ITEMS, "v2": collection}})


def test_index_builds_the_served_collection(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(data_dir, "items.v2", 300)
    assert cli.main(["index"]) == 0
    out = capsys.readouterr().out
    assert "indexing items.v2 (300 points)" in out
    assert "of 300 vectors in the HNSW index" in out  # 300 8-d points: below the engine's threshold, none
    assert "vectors quantized: int8" in out  # STREAMREC_QDRANT_QUANTIZATION's default


def test_index_refuses_a_store_a_worker_holds(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(data_dir, "items.v2", 10)
    with open_store(url=None, api_key=None, data_dir=data_dir):  # as a running worker holds it
        assert cli.main(["index"]) == 1
    assert "stop the worker that uses it first" in capsys.readouterr().err


def test_index_names_a_missing_collection(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(data_dir, "items.v2", 10)
    assert cli.main(["index", "--collection", "nope"]) == 1
    assert "no collection 'nope'" in capsys.readouterr().err
