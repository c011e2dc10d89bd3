"""Export a fitted two-tower model for the worker: the user tower as ONNX, the item tower as tables.

What `inference/event_encoder.py` reads (its docstring says how the worker uses it):

* ``user_tower.onnx``: inputs ``vectors`` (B, T, d: the begin token's and the items' vectors,
  left-padded with zeros), ``padding`` (B, T bool), ``unit_age`` (B, T int64), ``latest`` (B, T:
  the positions whose mean is added to the output when the model was trained with that skip);
  output ``user`` (B, d), the user vector after the window's last event. Everything between the
  window and the user vector is in the graph, so the worker's vectors are the model's.
* ``tables.npz``: every known item's vector, the begin token, and where the model has them the
  text projection, the title words' vectors and the known items' unit text vectors (to place
  items it never saw: by a text sibling, :mod:`inference.text_siblings`, or by projection).
* ``tower.json``: the manifest (dimensions, the text space the projection reads, the score scale
  the ranker divides by, what it was trained on and how well it did).

The export checks the ONNX graph against torch on windows of several lengths and refuses a
mismatch, as `inference.export` does for the text encoder.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.event_encoder import (
    GRAPH_INPUTS,
    GRAPH_OUTPUT,
    TOWER_ARRAYS,
    TOWER_FORMAT,
    TOWER_GRAPH,
    TOWER_MANIFEST,
    EventEncoder,
    Window,
    stack_windows,
)
from inference.clustering import unit_rows
from inference.export import ExportMismatch, staged_folder
from inference.title_words import TitleWords
from training.model import MAX_UNIT_AGE, PURCHASE, TwoTower
from training.split import Phase, ProtocolSplit

TOLERANCE = 1e-4
"""Largest absolute difference allowed between the ONNX and the torch user vector."""


class UserVectorGraph(nn.Module):
    """The user tower from prepared window arrays to the user vector after the last event: the
    arithmetic of ``TwoTower.encode(...)[:, -1]`` on the model's own weights, written out so that
    it traces with a dynamic batch and length. (``nn.MultiheadAttention`` computes its reshapes
    from Python ints, which the ONNX trace freezes to the example's shape; its fused inference
    kernel has no ONNX form at all.) The export compares the two on every check window."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.users = model.users
        self.skip = model.config.last_item_skip
        self.heads, self.dim = model.config.heads, model.config.dim
        self.max_len = model.config.max_len

    def _attention(self, layer: nn.TransformerEncoderLayer, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        attention = layer.self_attn
        batch, dim, head_dim = x.shape[0], self.dim, self.dim // self.heads
        q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, -1, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (head_dim ** -0.5)
        weights = torch.softmax(scores.masked_fill(blocked[:, None], float("-inf")), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, -1, dim)
        return attention.out_proj(out)

    def forward(self, vectors: torch.Tensor, padding: torch.Tensor, unit_age: torch.Tensor,
                latest: torch.Tensor) -> torch.Tensor:
        users = self.users
        # Positions count from the end of the window (UserTower.forward), without Python ints.
        ones = torch.ones_like(unit_age)
        position = (ones.flip(1).cumsum(1).flip(1) - 1).clamp(max=self.max_len)
        x = vectors + users.positions(position)
        if users.unit_age is not None:
            x = x + users.unit_age(unit_age.clamp(max=MAX_UNIT_AGE))
        x = x + users.event_type(torch.full_like(unit_age, PURCHASE))
        x = users.input_norm(x)
        index = ones.cumsum(1)
        eye = index[:, :, None] == index[:, None, :]
        future = index[:, None, :] > index[:, :, None]
        blocked = (future | padding[:, None, :]) & ~eye
        for layer in users.encoder.layers:  # norm_first layers, as UserTower builds them
            x = x + self._attention(layer, layer.norm1(x), blocked)
            x = x + layer.linear2(F.gelu(layer.linear1(layer.norm2(x))))
        h = users.output_norm(x)[:, -1]
        if self.skip:
            h = h + (vectors * latest.unsqueeze(-1)).sum(dim=1) / latest.sum(dim=1, keepdim=True).clamp(min=1.0)
        return h


def reference_user_vectors(model: TwoTower, arrays: tuple[np.ndarray, ...]) -> np.ndarray:
    """The user vectors torch's own modules give for :func:`stack_windows`' arrays: what the
    exported graph must reproduce."""
    vectors, padding, unit_age, latest = map(torch.from_numpy, arrays)
    with torch.no_grad():
        h = model.users(vectors, padding, unit_age)[:, -1]
        if model.config.last_item_skip:
            h = h + (vectors * latest[..., None]).sum(dim=1) / latest.sum(dim=1, keepdim=True).clamp(min=1.0)
    return h.numpy()


def _tables(model: TwoTower, vocabulary: TitleWords | None) -> dict[str, np.ndarray]:
    items = model.items
    with torch.no_grad():
        tables = {"item_vectors": items().numpy(), "begin": model.users.begin.numpy().copy()}
        if items.text_proj is not None:
            tables["text_proj_weight"] = items.text_proj.weight.numpy().copy()
            tables["text_proj_bias"] = items.text_proj.bias.numpy().copy()
            if items.sibling_similarity is not None:
                # Zero rows for items the model never trained: they are nobody's sibling.
                tables["item_text"] = unit_rows(items.text.numpy()) * items.id_mask.numpy()
        if vocabulary is not None and len(vocabulary) and items.attr_bag is not None:
            lo = vocabulary.offset
            tables["word_vectors"] = items.attr_bag.weight[lo:lo + len(vocabulary)].numpy().copy()
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in tables.items()}


def _check_windows(item_vectors: np.ndarray, max_len: int, seed: int) -> list[list[Window]]:
    """Batches of random windows: empty, one item, baskets, longer than the graph's window."""
    rng = np.random.default_rng(seed)
    batches = []
    for lengths in ((0, 1, 3), (5, 12, max_len + 7)):
        batch = []
        for n in lengths:
            keys = np.sort(rng.integers(0, max(1, n // 3), size=n))
            ages = (keys.max() - keys) if n else np.zeros(0, dtype=np.int64)
            rows = rng.integers(0, len(item_vectors), size=n)
            batch.append(Window(item_vectors[rows], ages.astype(np.int64), int(ages.max() + 2) if n else 0))
        batches.append(batch)
    return batches


def history_windows(split: ProtocolSplit, users: Sequence[int], phase: Phase, item_vectors: np.ndarray) -> list[Window]:
    """The users' known past for ``phase`` as the worker's windows: every item, a unit per basket."""
    out = []
    for u in users:
        units = split.inputs(int(u), phase)
        items = [i for unit in units for i in unit]
        ages = np.asarray([len(units) - 1 - j for j, unit in enumerate(units) for _ in unit], dtype=np.int64)
        out.append(Window(item_vectors[items], ages, len(units)))
    return out


def score_scale(model: TwoTower, tables: dict[str, np.ndarray], windows: list[Window]) -> float:
    """The median over ``windows`` of the 10th best item score: the ranker divides tower scores by
    it, so a typical top-10 item has a similarity near 1, on the scale of the cosines the other
    ranking weights were set against."""
    users = reference_user_vectors(
        model, stack_windows(windows, tables["begin"], model.config.max_len, model.config.unit_recency))
    scores = users @ tables["item_vectors"].T
    tenth = -np.partition(-scores, 9, axis=1)[:, 9] if scores.shape[1] >= 10 else scores.max(axis=1)
    return float(max(np.median(tenth), 1e-6))


def export_tower(
    model: TwoTower,
    item_ids: list[str],
    out_dir: Path,
    *,
    vocabulary: TitleWords | None,
    text_space: str | None,
    scale_windows: list[Window],
    info: dict[str, Any] | None = None,
    opset: int = 17,
) -> Path:
    """Write ``model`` into ``out_dir`` (replaced whole, never half-written) and return it.

    ``item_ids[i]`` is the catalog id of the model's item ``i``; ``text_space`` the version of the
    text encoder whose vectors the model's text projection reads (None: a tower without text);
    ``scale_windows`` some users' windows (tower vectors) to set the score scale from."""
    if len(item_ids) != model.items.n_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.items.n_items} items")
    if not scale_windows:
        raise ValueError("the score scale needs at least one user's window")
    model = model.eval()
    config = model.config
    tables = _tables(model, vocabulary)
    graph = UserVectorGraph(model).eval()
    checks = _check_windows(tables["item_vectors"], config.max_len, seed=0)
    with staged_folder(Path(out_dir)) as staged:
        example = tuple(map(torch.from_numpy,
                            stack_windows(checks[1], tables["begin"], config.max_len, config.unit_recency)))
        with torch.no_grad():
            torch.onnx.export(
                graph, example, str(staged / TOWER_GRAPH), dynamo=False, opset_version=opset,
                input_names=list(GRAPH_INPUTS), output_names=[GRAPH_OUTPUT],
                dynamic_axes={**{name: {0: "batch", 1: "length"} for name in GRAPH_INPUTS},
                              GRAPH_OUTPUT: {0: "batch"}},
            )
        np.savez(staged / TOWER_ARRAYS, **tables)
        digest = hashlib.blake2b(digest_size=6)
        for name in sorted(tables):
            digest.update(tables[name].tobytes())
        digest.update((staged / TOWER_GRAPH).read_bytes())
        words = sorted(vocabulary.index, key=vocabulary.index.get) if vocabulary is not None else []
        manifest = {
            "format": TOWER_FORMAT,
            "version": f"tower-{digest.hexdigest()}",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dim": config.dim,
            "max_len": config.max_len,
            "unit_recency": config.unit_recency,
            "last_item_skip": config.last_item_skip,
            "config": config.as_dict(),
            "text_space": text_space if "text_proj_weight" in tables else None,
            "sibling_similarity": config.sibling_similarity if "item_text" in tables else None,
            "sibling_ramp": config.sibling_ramp,
            "score_scale": score_scale(model, tables, scale_windows),
            "onnx_opset": opset,
            "item_ids": list(item_ids),
            "words": words,
            **(info or {}),
        }
        (staged / TOWER_MANIFEST).write_text(json.dumps(manifest))
        served = EventEncoder(staged, threads=None)
        worst = 0.0
        for batch in checks:
            arrays = stack_windows(batch, tables["begin"], config.max_len, config.unit_recency)
            expected = reference_user_vectors(model, arrays)
            worst = max(worst, float(np.abs(served.user_vectors(batch) - expected).max()))
        if worst > TOLERANCE:
            raise ExportMismatch(f"the ONNX user tower differs from torch by {worst:.2e} (> {TOLERANCE:.0e})")
        manifest["onnx_max_abs_diff"] = worst
        (staged / TOWER_MANIFEST).write_text(json.dumps(manifest))
    return Path(out_dir)
