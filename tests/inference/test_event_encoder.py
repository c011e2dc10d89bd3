"""The event encoder's serving side: windows from recent items, loading, refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from inference.encoder import read_manifest
from inference.event_encoder import (
    MAX_UNIT_AGE,
    TOWER_MANIFEST,
    EventEncoder,
    TowerNotAvailable,
    Window,
    load_event_encoder,
    stack_windows,
    tower_folder,
    unit_ages,
)
from inference.schemas import Item
from tests.fixtures.tiny_tower import build_tiny_tower

ITEMS = [Item(schema=1, item_id=f"i{n}", title=f"teacup candle {n}") for n in range(12)]


def test_items_sharing_a_time_are_one_unit_counted_from_the_latest():
    ages, units = unit_ages([1.0, 5.0, 5.0, 9.0, 9.0, 9.0])
    assert ages.tolist() == [2, 1, 1, 0, 0, 0] and units == 3
    empty, none = unit_ages([])
    assert len(empty) == 0 and none == 0


def test_windows_are_left_padded_behind_a_begin_token_and_cut_to_the_last_items():
    begin = np.full(2, 9.0, dtype=np.float32)
    long = Window(np.arange(10, dtype=np.float32).reshape(5, 2), np.array([20, 20, 1, 0, 0]), 21)
    short = Window(np.ones((1, 2), dtype=np.float32), np.array([0]), 1)
    vectors, padding, ages, latest = stack_windows([long, short], begin, max_len=3, unit_recency=True)
    assert vectors.shape == (2, 4, 2)
    assert vectors[0].tolist() == [[9, 9], [4, 5], [6, 7], [8, 9]]  # begin, then the last 3 items
    assert padding.tolist() == [[False] * 4, [True, True, False, False]]
    assert ages[0].tolist() == [MAX_UNIT_AGE, 1, 0, 0]  # the begin token's age is capped
    assert latest.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]  # the latest unit's items
    _, _, _, last = stack_windows([long, short], begin, max_len=3, unit_recency=False)
    assert last.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]  # without unit recency: the last position
    with pytest.raises(ValueError, match="at least one window"):
        stack_windows([], begin, max_len=3, unit_recency=True)


@pytest.fixture
def version_dir(tmp_path, tiny_onnx_dir, tiny_encoder):
    folder = tmp_path / "version"
    shutil.copytree(tiny_onnx_dir, folder)
    build_tiny_tower(tiny_encoder, ITEMS, tower_folder(folder))
    return folder


def test_a_version_folder_serves_its_tower_and_a_folder_without_one_serves_none(version_dir, tiny_onnx_dir):
    tower = load_event_encoder(version_dir)
    assert isinstance(tower, EventEncoder) and tower.known_items == len(ITEMS)
    assert tower.text_space == read_manifest(version_dir)["version"]
    assert tower.user_vectors([Window(np.ones((2, tower.dim), dtype=np.float32), np.array([1, 0]), 2)]).shape \
        == (1, tower.dim)
    assert load_event_encoder(tiny_onnx_dir) is None


def test_a_tower_from_another_text_space_is_not_served(version_dir, caplog):
    manifest_path = tower_folder(version_dir) / TOWER_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "text_space": "some-other-encoder"}))
    assert load_event_encoder(version_dir) is None
    assert "trained beside text encoder some-other-encoder" in caplog.text


def test_an_unreadable_or_foreign_tower_folder_is_refused_with_the_reason(version_dir):
    folder = tower_folder(version_dir)
    manifest = json.loads((folder / TOWER_MANIFEST).read_text())
    (folder / TOWER_MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(TowerNotAvailable, match="tower format 99"):
        EventEncoder(folder)
    (folder / TOWER_MANIFEST).write_text(json.dumps(manifest))
    (folder / "user_tower.onnx").write_bytes(b"not a graph")
    with pytest.raises(TowerNotAvailable, match="onnxruntime cannot load"):
        EventEncoder(folder)
    (folder / "tables.npz").unlink()
    with pytest.raises(TowerNotAvailable, match="not a readable tower folder"):
        EventEncoder(folder)


def test_the_int8_copy_of_a_version_carries_its_tower(version_dir, tmp_path):
    from inference.quantize import quantize_int8

    int8 = quantize_int8(version_dir, tmp_path / "version-int8")
    tower = load_event_encoder(int8)  # the copy's encoder is "<version>-int8"; the tower reads its source's space
    assert tower is not None and tower.text_space == read_manifest(version_dir)["version"]
