"""The event encoder at serving time: a user's recent events to one vector in the item tower's space.

`streamrec evaluate` and `streamrec train --tower` fit a two-tower model (training/model.py): an
item tower (a learned vector per known item; for an item it never saw, a projection of its text
embedding plus the mean of its title words' vectors) and a user tower (a small causal
transformer over the user's last item vectors, with unit recency). `training/tower_export.py`
writes it into a ``tower/`` folder beside a text encoder: the user tower as ONNX, the item
tables as arrays, and a manifest. This module reads that folder. The worker then computes a
fresh user vector from the profile's recent items on every event and retrieves by dot product
against the catalog's tower vectors (inference/recommender.py).

The item tables belong to the text space they were projected from: a tower is used only with
the text encoder version it was trained beside (``text_space`` in its manifest).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.text_siblings import mixed_with_sibling, nearest_known, sibling_weights
from inference.title_words import TitleWords

log = logging.getLogger("streamrec.inference.event_encoder")

TOWER_DIR = "tower"
TOWER_MANIFEST = "tower.json"
TOWER_GRAPH = "user_tower.onnx"
TOWER_ARRAYS = "tables.npz"
TOWER_FORMAT = 1
GRAPH_INPUTS = ("vectors", "padding", "unit_age", "latest")
GRAPH_OUTPUT = "user"
MAX_UNIT_AGE = 15
"""Unit ages past this share one embedding (training/model.py)."""


class TowerNotAvailable(RuntimeError):
    """A tower folder that cannot be served: missing files, another format, another text space."""


@dataclass(frozen=True)
class Window:
    """One user's recent items for the user tower: tower vectors oldest first, each item's unit
    age (0: the latest unit), and the begin token's age (how many units the user has known)."""

    vectors: np.ndarray
    unit_ages: np.ndarray
    begin_age: int


def unit_ages(unit_keys: Sequence[float]) -> tuple[np.ndarray, int]:
    """Unit ages of items listed oldest first, where items sharing a key (a basket's lines share
    their timestamp) form one unit; and the number of units."""
    ages = np.zeros(len(unit_keys), dtype=np.int64)
    age, previous = -1, None
    for j in range(len(unit_keys) - 1, -1, -1):
        if unit_keys[j] != previous:
            age, previous = age + 1, unit_keys[j]
        ages[j] = age
    return ages, age + 1


def stack_windows(
    windows: Sequence[Window], begin: np.ndarray, max_len: int, unit_recency: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The user tower's inputs for a batch, as training builds them (training/model.py:
    ``windows``): per row the begin token, then the last ``max_len`` items, left-padded.

    Returns ``vectors`` (B, T, d) float32 (zeros where padded), ``padding`` (B, T) bool,
    ``unit_age`` (B, T) int64 and ``latest`` (B, T) float32: the positions whose mean joins the
    output (the latest unit's items with unit recency, else the last position)."""
    if not windows:
        raise ValueError("stack_windows needs at least one window")
    dim = begin.shape[0]
    kept = [(w.vectors[-max_len:], w.unit_ages[-max_len:], w.begin_age) for w in windows]
    length = 1 + max(len(v) for v, _, _ in kept)
    vectors = np.zeros((len(kept), length, dim), dtype=np.float32)
    padding = np.ones((len(kept), length), dtype=bool)
    ages = np.zeros((len(kept), length), dtype=np.int64)
    latest = np.zeros((len(kept), length), dtype=np.float32)
    for row, (items, item_ages, begin_age) in enumerate(kept):
        first = length - len(items)
        vectors[row, first - 1] = begin
        vectors[row, first:] = items
        padding[row, first - 1:] = False
        ages[row, first - 1] = min(begin_age, MAX_UNIT_AGE)
        ages[row, first:] = np.minimum(item_ages, MAX_UNIT_AGE)
        if not unit_recency:
            latest[row, -1] = 1.0
        elif len(items):
            latest[row, first:] = item_ages == 0
    return vectors, padding, ages, latest


def tower_folder(encoder_dir: Path) -> Path:
    return Path(encoder_dir) / TOWER_DIR


class EventEncoder:
    """The exported towers of one model version: item vectors and user vectors in one space."""

    def __init__(self, folder: Path, *, threads: int | None = 1) -> None:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / TOWER_MANIFEST).read_text())
            arrays = np.load(folder / TOWER_ARRAYS, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TowerNotAvailable(f"{folder} is not a readable tower folder: {exc}") from exc
        if manifest.get("format") != TOWER_FORMAT:
            raise TowerNotAvailable(f"{folder}: tower format {manifest.get('format')!r}, this code reads {TOWER_FORMAT}")
        self.manifest = manifest
        self.folder = folder
        self.dim = int(manifest["dim"])
        self.max_len = int(manifest["max_len"])
        self.unit_recency = bool(manifest["unit_recency"])
        self.score_scale = float(manifest["score_scale"])
        self.text_space: str | None = manifest.get("text_space")
        self._begin = arrays["begin"].astype(np.float32)
        self._items = arrays["item_vectors"].astype(np.float32)
        self._row = {item_id: j for j, item_id in enumerate(manifest["item_ids"])}
        if len(self._row) != len(self._items):
            raise TowerNotAvailable(f"{folder}: {len(self._row)} item ids for {len(self._items)} item vectors")
        self._proj_weight = arrays["text_proj_weight"].astype(np.float32) if "text_proj_weight" in arrays else None
        self._proj_bias = arrays["text_proj_bias"].astype(np.float32) if "text_proj_bias" in arrays else None
        self._word_vectors = arrays["word_vectors"].astype(np.float32) if "word_vectors" in arrays else None
        self._words = TitleWords({w: j for j, w in enumerate(manifest.get("words", []))}, 0)
        self._item_text = arrays["item_text"].astype(np.float32) if "item_text" in arrays else None
        self.sibling_similarity: float | None = manifest.get("sibling_similarity")
        # Towers exported before the ramp existed placed new items by a step.
        self.sibling_ramp = float(manifest.get("sibling_ramp", 0.0))
        if self._item_text is not None and self._item_text.shape[0] != len(self._items):
            raise TowerNotAvailable(f"{folder}: {self._item_text.shape[0]} item texts for {len(self._items)} items")
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(folder / TOWER_GRAPH), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise TowerNotAvailable(f"onnxruntime cannot load {folder / TOWER_GRAPH}: {exc}") from exc
        # A model that does not read an input (unit ages without unit recency, `latest` without
        # the last-item skip) is exported without it.
        self._inputs = {i.name for i in self._session.get_inputs()}
        if not {"vectors", "padding"} <= self._inputs <= set(GRAPH_INPUTS):
            raise TowerNotAvailable(f"{folder / TOWER_GRAPH} has inputs {sorted(self._inputs)}, expected "
                                    f"vectors and padding among {list(GRAPH_INPUTS)}")

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def known_items(self) -> int:
        return len(self._row)

    def places_new_items(self) -> bool:
        """Whether an item the tower never saw gets a vector (from its text); else it is left out."""
        return self._proj_weight is not None

    def item_vector(self, item_id: str, text_vector: np.ndarray, title: str) -> np.ndarray | None:
        """The item's vector in the tower's space: its learned one, or for an item the tower
        never saw, its text sibling's (a known item whose text it nearly repeats), a mix of that
        and its own text-made vector (a close text, not that close: :mod:`inference.text_siblings`)
        or else its own: the projection of its text vector plus its known title words' mean; None
        where neither exists (a tower trained without text). A sibling search reads every known item's text
        vector: linear in the tower's catalog (1.7 ms for 3,659 items of 384 dimensions on the
        2-core development machine, busy), paid once per new item as it is put."""
        row = self._row.get(item_id)
        if row is not None:
            return self._items[row]
        if self._proj_weight is None:
            return None
        weight, sibling = 0.0, -1
        if self._item_text is not None and self.sibling_similarity is not None:
            rows, similarity = nearest_known(text_vector, self._item_text)
            sibling, weight = int(rows[0]), float(sibling_weights(similarity, self.sibling_similarity, self.sibling_ramp)[0])
            if weight == 1.0:
                return self._items[sibling]
        vector = self._proj_weight @ np.asarray(text_vector, dtype=np.float32) + self._proj_bias
        if self._word_vectors is not None:
            known = self._words.of(title)
            if known:
                vector = vector + self._word_vectors[known].mean(axis=0)
        if weight > 0.0:
            vector = mixed_with_sibling(vector, self._items[sibling], weight)
        return vector.astype(np.float32, copy=False)

    def user_vectors(self, windows: Sequence[Window]) -> np.ndarray:
        """(B, dim) user vectors, one ONNX call for the batch."""
        vectors, padding, ages, latest = stack_windows(windows, self._begin, self.max_len, self.unit_recency)
        feed = {"vectors": vectors, "padding": padding, "unit_age": ages, "latest": latest}
        (out,) = self._session.run([GRAPH_OUTPUT], {name: a for name, a in feed.items() if name in self._inputs})
        return out

    def __repr__(self) -> str:
        return f"EventEncoder({self.folder}, version={self.version}, items={self.known_items})"


def load_event_encoder(encoder_dir: Path, *, threads: int | None = 1) -> EventEncoder | None:
    """The tower in a text encoder's folder, or None where it has none. A tower projected from
    another text space is refused (logged), not served: its new-item vectors would be noise. An
    int8 copy of the encoder (inference/quantize.py) serves its fp32 source's space."""
    from inference.encoder import read_manifest

    folder = tower_folder(encoder_dir)
    if not (folder / TOWER_MANIFEST).exists():
        return None
    tower = EventEncoder(folder, threads=threads)
    manifest = read_manifest(Path(encoder_dir))
    spaces = {manifest["version"], manifest.get("quantized_from")}
    if tower.text_space is not None and tower.text_space not in spaces:
        log.warning("not serving the tower in %s: it was trained beside text encoder %s, this one is %s",
                    folder, tower.text_space, manifest["version"])
        return None
    return tower
