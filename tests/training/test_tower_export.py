"""Exporting the two towers for the worker: the ONNX user vector equals the torch model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inference.event_encoder import TOWER_MANIFEST, EventEncoder, Window, unit_ages
from inference.export import ExportMismatch
from inference.text_siblings import nearest_known, sibling_weights
from inference.title_words import TitleWords
from training import tower_export
from training.model import TowerConfig, TwoTower, windows
from training.tower_export import export_tower

N_ITEMS, TEXT_DIM = 40, 12


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def tower(config: TowerConfig, *, text: bool = True) -> TwoTower:
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32) if text else None
    attributes = [[i % 6] for i in range(N_ITEMS)] if text else None
    model = TwoTower(N_ITEMS, config, vectors, attributes, 6 if text else 0)
    with torch.no_grad():  # trained-looking weights: no zero biases, a non-trivial output norm
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def served_window(units: list[list[int]], item_vectors: np.ndarray) -> Window:
    """A user's past as the worker holds it: items oldest first, a unit per timestamp."""
    items = [i for unit in units for i in unit]
    keys = [float(t) for t, unit in enumerate(units) for _ in unit]
    ages, n_units = unit_ages(keys)
    return Window(item_vectors[items], ages, n_units)


SCALE = [Window(np.ones((2, 16), dtype=np.float32), np.array([1, 0]), 2)]
PASTS = [
    [[3]],
    [[1, 2, 5], [7]],
    [[0, 1], [2, 3, 4], [5], [6, 7, 8, 9]],
    [[i % N_ITEMS, (i + 1) % N_ITEMS] for i in range(9)],  # 18 items: longer than the window
]


@pytest.mark.parametrize("config", [
    TowerConfig(dim=16, layers=2, heads=2, max_len=10, unit_recency=True, last_item_skip=True),
    TowerConfig(dim=16, layers=1, heads=4, max_len=6, unit_recency=False, last_item_skip=False),
    TowerConfig(dim=8, layers=2, heads=2, max_len=12, unit_recency=False, last_item_skip=True),
], ids=["baskets", "items-no-skip", "items-skip"])
def test_worker_user_vectors_equal_the_models(tmp_path, config):
    """From the same past, the exported graph fed by the worker's windows gives the vector the
    model gives at the end of its training windows (training/model.py: windows, encode)."""
    model = tower(config)
    with torch.no_grad():
        item_vectors = model.items()
        tokens, ages = windows(PASTS, config.max_len)
        expected = model.encode(item_vectors, tokens, ages)[:, -1].numpy()
    folder = export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=None,
                          text_space="enc-1", scale_windows=[served_window(PASTS[1], item_vectors.numpy())])
    served = EventEncoder(folder).user_vectors([served_window(p, item_vectors.numpy()) for p in PASTS])
    np.testing.assert_allclose(served, expected, atol=1e-4)
    manifest = json.loads((folder / TOWER_MANIFEST).read_text())
    assert manifest["onnx_max_abs_diff"] <= 1e-4
    assert manifest["max_len"] == config.max_len and manifest["text_space"] == "enc-1"
    assert manifest["score_scale"] > 0


def test_items_are_placed_as_the_item_tower_places_them(tmp_path):
    config = TowerConfig(dim=16, layers=1, heads=2, max_len=8, unit_recency=True, last_item_skip=True)
    model = tower(config)
    vocabulary = TitleWords({"red": 0, "mug": 1, "lamp": 2}, offset=3)  # attributes 3..5 are title words
    folder = export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=vocabulary,
                          text_space="enc-1", scale_windows=SCALE)
    served = EventEncoder(folder)
    with torch.no_grad():
        known = model.items()[7].numpy()
        text = torch.randn(1, TEXT_DIM)
        new = model.items.embed_text(text, [[3, 4]])[0].numpy()  # "red", "mug"
        bare = model.items.embed_text(text)[0].numpy()
    np.testing.assert_allclose(served.item_vector("i7", np.zeros(TEXT_DIM), "anything"), known, atol=1e-6)
    np.testing.assert_allclose(served.item_vector("new", text[0].numpy(), "Red MUG, 12 pack"), new, atol=1e-5)
    np.testing.assert_allclose(served.item_vector("plain", text[0].numpy(), "blue chair"), bare, atol=1e-5)
    assert served.places_new_items()


def test_a_new_item_whose_text_repeats_a_known_ones_is_served_that_items_vector(tmp_path):
    config = TowerConfig(dim=16, layers=1, heads=2, max_len=8, sibling_similarity=0.9)
    model = tower(config)
    model.items.mask_ids(np.array([5]))  # never trained: nobody's sibling
    folder = export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=None,
                          text_space="enc-1", scale_windows=SCALE)
    served = EventEncoder(folder)
    text = model.items.text.numpy()
    with torch.no_grad():
        vectors = model.items().numpy()
        projected = model.items.embed_text(torch.from_numpy(text[[5]]))[0].numpy()
    assert served.sibling_similarity == 0.9
    variant = 3.0 * text[7] + 0.05 * np.abs(text[8])  # item 7's text, longer, a little changed
    np.testing.assert_allclose(served.item_vector("variant", variant, "x"), vectors[7], atol=1e-6)
    np.testing.assert_allclose(served.item_vector("again", text[5], "x"), projected, atol=1e-5)


def test_a_new_item_whose_text_is_close_to_a_known_ones_is_served_a_mix_of_both_vectors(tmp_path):
    model = tower(TowerConfig(dim=16, layers=1, heads=2, max_len=8, sibling_similarity=0.9, sibling_ramp=0.2))
    folder = export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=None,
                          text_space="enc-1", scale_windows=SCALE)
    served = EventEncoder(folder)
    assert (served.sibling_similarity, served.sibling_ramp) == (0.9, 0.2)
    text = model.items.text.numpy()
    with torch.no_grad():
        vectors = model.items().numpy()
    # Item 7's text turned towards another's until their cosine is inside the ramp.
    for step in np.linspace(0.1, 2.0, 40):
        query = text[7] / np.linalg.norm(text[7]) + step * text[11] / np.linalg.norm(text[11])
        rows, similarity = nearest_known(query, served._item_text)
        share = float(sibling_weights(similarity, 0.9, 0.2)[0])
        if rows[0] == 7 and 0.2 < share < 0.8:
            break
    else:
        pytest.fail("no query inside the ramp")
    with torch.no_grad():
        own = model.items.embed_text(torch.from_numpy(query[None].astype(np.float32)))[0].numpy()
    np.testing.assert_allclose(served.item_vector("close", query, "x"), share * vectors[7] + (1 - share) * own,
                               atol=1e-5)


def test_a_tower_without_siblings_places_new_items_by_projection(tmp_path):
    model = tower(TowerConfig(dim=16, layers=1, heads=2, max_len=8, sibling_similarity=None))
    folder = export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=None,
                          text_space="enc-1", scale_windows=SCALE)
    served = EventEncoder(folder)
    text = model.items.text.numpy()
    with torch.no_grad():
        projected = model.items.embed_text(torch.from_numpy(text[[7]]))[0].numpy()
    assert served.sibling_similarity is None and "item_text" not in np.load(folder / "tables.npz")
    np.testing.assert_allclose(served.item_vector("copy", text[7], "x"), projected, atol=1e-5)


def test_a_tower_without_text_serves_known_items_only(tmp_path):
    config = TowerConfig(dim=16, layers=1, heads=2, max_len=5)
    folder = export_tower(tower(config, text=False), [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower",
                          vocabulary=None, text_space="enc-1", scale_windows=SCALE)
    served = EventEncoder(folder)
    assert served.text_space is None and not served.places_new_items()
    assert served.item_vector("i1", np.zeros(TEXT_DIM), "x") is not None
    assert served.item_vector("unseen", np.zeros(TEXT_DIM), "x") is None


def test_an_export_that_disagrees_with_torch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    config = TowerConfig(dim=16, layers=1, heads=2, max_len=5)
    real = tower_export.reference_user_vectors
    monkeypatch.setattr(tower_export, "reference_user_vectors", lambda model, arrays: real(model, arrays) + 0.01)
    with pytest.raises(ExportMismatch, match="differs from torch"):
        export_tower(tower(config), [f"i{i}" for i in range(N_ITEMS)], tmp_path / "tower", vocabulary=None,
                     text_space="enc-1", scale_windows=SCALE)
    assert not (tmp_path / "tower").exists()


def test_item_ids_and_scale_windows_are_required(tmp_path):
    model = tower(TowerConfig(dim=16, layers=1, heads=2))
    with pytest.raises(ValueError, match="item ids"):
        export_tower(model, ["a"], tmp_path / "t", vocabulary=None, text_space=None, scale_windows=SCALE)
    with pytest.raises(ValueError, match="score scale"):
        export_tower(model, [f"i{i}" for i in range(N_ITEMS)], tmp_path / "t", vocabulary=None, text_space=None,
                     scale_windows=[])
