"""The worker's own answers, scored offline on the evaluation's cases.

The systems of `training/evaluate.py` are models. These are what a running worker sends: the
serving code itself (`inference.recommender.Recommender`, its embedded store, profiles,
retrieval and ranking) over the split's catalog, with exploration off, so that the catalog and
the user alone decide. Scored in the same run and on the same cases as the models.

* `served_intent_scores`: a new customer who types a text on `streamrec.intents` (no
  popularity counted yet).
* `served_history_scores`: a customer whose past purchases reached the worker as events, each
  basket's lines at its time, answered by the model's event encoder as exported for the worker
  (training/tower_export.py): the worker's window of recent items, not the model's full history;
  ranked by the tower score alone (popularity and category weights 0: a replay's popularity
  would count other users' later purchases).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.event_encoder import EventEncoder
from inference.recommender import Recommender
from inference.schemas import MAX_TEXT_LEN, Event, EventType, Intent, Item, Recommendation
from inference.settings import InferenceSettings
from inference.store import open_store
from training.split import Phase, ProtocolSplit

SERVED_DEPTH = 100
"""Items asked of the worker per user: its candidates and its answer (ranks below are unknown)."""


def intent_text(text: str) -> str:
    """`text` within an intent's length limit, cut after the last whole phrase that fits."""
    if len(text) <= MAX_TEXT_LEN:
        return text
    return text[:MAX_TEXT_LEN].rsplit(", ", 1)[0]


def _scores_from(recommendations: Sequence[Recommendation], rows: Sequence[int], scores: torch.Tensor,
                 column: dict[str, int]) -> None:
    """Write each answer into its row of `scores`: an item at position p scores -p."""
    for n, rec in zip(rows, recommendations):
        positions = np.array([[column[i.item_id], i.position] for i in rec.items], dtype=np.int64)
        if len(positions):
            scores[n, torch.from_numpy(positions[:, 0])] = -torch.from_numpy(positions[:, 1]).float()


def served_history_scores(
    split: ProtocolSplit, users: Sequence[int], phase: Phase, encoder: Any, tower_dir: Path, *, batch: int = 256,
) -> torch.Tensor:
    """One row per user of `users`: the worker's answer once the user's known past for `phase`
    (split.inputs) has reached it as purchase events, scored as `served_intent_scores` scores."""
    scores = torch.full((len(users), split.n_items), -float(SERVED_DEPTH + 1))
    column = {item_id: i for i, item_id in enumerate(split.item_ids)}
    titles = split.item_text or split.item_ids
    with tempfile.TemporaryDirectory(prefix="streamrec-served-") as tmp:
        settings = InferenceSettings(data_dir=Path(tmp), exploration_rate=0.0, default_k=SERVED_DEPTH,
                                     candidates=SERVED_DEPTH, weight_popularity=0.0, weight_category=0.0)
        store = open_store(url=None, api_key=None, data_dir=settings.data_dir)
        try:
            recommender = Recommender(encoder, store, settings, tower=EventEncoder(tower_dir))
            recommender.upsert_items([Item(schema=1, item_id=item_id, title=title or item_id)
                                      for item_id, title in zip(split.item_ids, titles)])
            for lo in range(0, len(users), batch):
                rows = range(lo, min(lo + batch, len(users)))
                events = [event for n in rows for event in _past_events(split, int(users[n]), phase)]
                recommender.process_events(events)
                answers = [recommender.recommend(split.users[int(users[n])]) for n in rows]
                _scores_from(answers, rows, scores, column)
        finally:
            store.close()
    return scores


def _past_events(split: ProtocolSplit, user: int, phase: Phase) -> list[Event]:
    """The user's known past as purchase events: a basket's lines share its time (its unit's
    time, or for a format without times one second per unit)."""
    units = split.inputs(user, phase)
    times = split.unit_times[user] if split.unit_times is not None else range(len(units))
    user_id = split.users[user]
    return [
        Event(schema=1, event_id=f"{user_id}:{j}:{k}", user_id=user_id, type=EventType.purchase,
              ts=datetime.fromtimestamp(float(t), tz=timezone.utc), item_id=split.item_ids[item], quantity=1)
        for j, (unit, t) in enumerate(zip(units, times)) for k, item in enumerate(unit)
    ]


def served_intent_scores(
    split: ProtocolSplit, texts: Sequence[str], encoder: Any, *, phrases: int, batch: int = 256,
) -> torch.Tensor:
    """One row per text: the worker's answer to it as an intent (STREAMREC_INTENT_PHRASES =
    `phrases`), as scores over all items: its top SERVED_DEPTH by position, every other item
    below them all (tied)."""
    if split.item_text is None:
        raise ValueError("the worker answers an intent from item text: this catalog has none")
    scores = torch.full((len(texts), split.n_items), -float(SERVED_DEPTH + 1))
    column = {str(i): i for i in range(split.n_items)}
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
                _scores_from(recommender.seed_interests(intents), rows, scores, column)
        finally:
            store.close()
    return scores
