"""Fit the two towers on the logged events and put them in a published version's folder.

`streamrec train --tower` runs this after the text encoder is fine-tuned and published: the
event encoder is trained on the same log, with the new encoder's item vectors as its text
features, and exported into ``versions/<version>/tower/`` (training/tower_export.py), so the
version announced on `streamrec.model-updates` carries both and workers swap them together.

The log becomes the offline protocol's split (DESIGN §4): each user's units (baskets) in time
order, the last held out for test and the one before for validation, which early stopping
reads. The manifest keeps both figures. Users with fewer than two units only count towards
the catalog.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.encoder import TextEncoder
from inference.event_encoder import tower_folder
from training.evaluate import EvaluateOptions, streamrec_config
from training.finetune import InteractionLog
from training.fit import evaluate_cases, fit
from training.split import ProtocolSplit, _index_units, eval_cases
from training.title_words import with_title_words
from training.tower_export import export_tower, history_windows

log = logging.getLogger("streamrec.training.tower_refit")


def interaction_split(interactions: InteractionLog, name: str = "logged-events") -> ProtocolSplit:
    """The log as the protocol's basket split: a unit per (user, basket), in time order, each
    item once per unit; the unit's time is its first event's."""
    events = interactions.events
    first = events.groupby(["user_id", "basket"], sort=False)["ts"].transform("min")
    ordered = events.assign(unit_ts=first).sort_values(["user_id", "unit_ts", "basket"], kind="stable")
    timed: dict[str, list[tuple[float, list[str]]]] = {}
    for (user, _, basket), rows in ordered.groupby(["user_id", "unit_ts", "basket"], sort=False):
        items = list(dict.fromkeys(interactions.item_ids[i] for i in rows["item"]))
        timed.setdefault(str(user), []).append((rows["unit_ts"].iloc[0].timestamp(), items))
    item_index = {item: i for i, item in enumerate(interactions.item_ids)}
    users, units, dropped = _index_units({u: [items for _, items in b] for u, b in timed.items()}, item_index)
    return ProtocolSplit(
        name=name, unit="basket", item_ids=list(interactions.item_ids), users=users, units=units,
        item_text=list(interactions.item_texts), dropped_users=dropped,
        unit_times=[[t for t, _ in timed[u]] for u in users],
    )


def refit_tower(
    interactions: InteractionLog, version_dir: Path, *, time_budget_s: float, seed: int = 0, progress: bool = False,
) -> dict[str, Any]:
    """Fit the towers on ``interactions`` and export them into ``version_dir``/tower; returns
    what the version's manifest records of them."""
    start = time.perf_counter()
    split, vocabulary = with_title_words(interaction_split(interactions))
    if split.n_users == 0:
        raise ValueError("no user has two units (baskets) in the log: the event encoder cannot be trained")
    log.info("fitting the event encoder: %d users, %d items, up to %.0fs", split.n_users, split.n_items, time_budget_s)
    encoder = TextEncoder(version_dir, device="cpu", threads=torch.get_num_threads())
    text = encoder.encode(split.item_text)
    options = EvaluateOptions(time_budget_s=time_budget_s, seed=seed, progress=progress)
    config = streamrec_config(split, options)
    fitted = fit(split, config, text=text)
    test = evaluate_cases(fitted.model, split, eval_cases(split, "test", exclude_seen=config.exclude_seen))
    with torch.no_grad():
        item_vectors = fitted.model.items().numpy()
    users = np.arange(0, split.n_users, max(1, split.n_users // 500))
    info = {
        "trained_on": split.describe(),
        "metrics": {"validation": fitted.best_validation, "test": test},
        "epochs": fitted.epochs, "best_epoch": fitted.best_epoch, "stopped": fitted.stopped,
        "train_s": round(fitted.train_s, 1),
    }
    folder = export_tower(fitted.model, split.item_ids, tower_folder(version_dir), vocabulary=vocabulary,
                          text_space=encoder.version,
                          scale_windows=history_windows(split, users, "test", item_vectors), info=info)
    log.info("event encoder for %s: %d users, %d epochs, test NDCG@10 %.4f, %.0fs", encoder.version,
             split.n_users, fitted.epochs, test["ndcg@10"], time.perf_counter() - start)
    return {"path": str(folder), **info, "total_s": round(time.perf_counter() - start, 1)}
