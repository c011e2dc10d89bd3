"""The worker's own answer to a text-only user, scored offline.

The text-only systems of `training/evaluate.py` are models. This is what a running worker sends
a new customer who types the same text on `streamrec.intents`: the serving code itself
(`inference.recommender.Recommender`, its embedded store, profiles, retrieval and ranking) over
the split's catalog, with exploration off and no popularity counted yet, so the catalog and the
text alone decide. Scored in the same run and on the same cases as the models.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.recommender import Recommender
from inference.schemas import MAX_TEXT_LEN, Intent, Item
from inference.settings import InferenceSettings
from inference.store import open_store
from training.split import ProtocolSplit

SERVED_DEPTH = 100
"""Items asked of the worker per user: its candidates and its answer (ranks below are unknown)."""


def intent_text(text: str) -> str:
    """`text` within an intent's length limit, cut after the last whole phrase that fits."""
    if len(text) <= MAX_TEXT_LEN:
        return text
    return text[:MAX_TEXT_LEN].rsplit(", ", 1)[0]


def served_intent_scores(
    split: ProtocolSplit, texts: Sequence[str], encoder: Any, *, phrases: int, batch: int = 256,
) -> torch.Tensor:
    """One row per text: the worker's answer to it as an intent (STREAMREC_INTENT_PHRASES =
    `phrases`), as scores over all items: its top SERVED_DEPTH by position, every other item
    below them all (tied)."""
    if split.item_text is None:
        raise ValueError("the worker answers an intent from item text: this catalog has none")
    scores = torch.full((len(texts), split.n_items), -float(SERVED_DEPTH + 1))
    with tempfile.TemporaryDirectory(prefix="streamrec-served-") as tmp:
        settings = InferenceSettings(data_dir=Path(tmp), exploration_rate=0.0, default_k=SERVED_DEPTH,
                                     candidates=SERVED_DEPTH, intent_phrases=phrases)
        store = open_store(url=None, api_key=None, data_dir=settings.data_dir)
        try:
            recommender = Recommender(encoder, store, settings)
            recommender.upsert_items([Item(schema=1, item_id=str(i), title=title or split.item_ids[i])
                                      for i, title in enumerate(split.item_text)])
            for lo in range(0, len(texts), batch):
                rows = range(lo, min(lo + batch, len(texts)))
                intents = [Intent(schema=1, user_id=f"text-{n}", text=intent_text(texts[n])) for n in rows]
                for n, rec in zip(rows, recommender.seed_interests(intents)):
                    positions = np.array([[int(i.item_id), i.position] for i in rec.items], dtype=np.int64)
                    if len(positions):
                        scores[n, torch.from_numpy(positions[:, 0])] = -torch.from_numpy(positions[:, 1]).float()
        finally:
            store.close()
    return scores
