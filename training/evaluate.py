"""The offline protocol end to end: load a file, split it, fit every system, rank, report.

Every system sees the same split in the same run and is ranked by the same code
(:mod:`training.metrics`): popularity, item co-occurrence, the RecBole SASRec peer (its own
venv, :mod:`training.peer`) and streamrec's two-tower model (:mod:`training.fit`).

Cold start (reported beside the warm figures, streamrec and popularity only):

* **new items** (catalogs with item text): a deterministic ``cold_fraction`` of the items (by a
  hash of the item id) is removed from all training data of a separately trained model. Test
  cases are the users whose test unit holds at least one such item; the targets are those items,
  ranked among all items. An unseen item's vector comes from its text alone. The same model's
  warm figure (the test unit's other items) is reported beside it.
* **text-only users** (catalogs with item text): a user is represented only by one text, the
  titles of the items of their first basket joined by ", " — as if they had typed what they
  like — and nothing else (no item ids, no other history, nothing excluded from the ranking).
  Their test basket (the protocol's test unit, all of its items) is ranked among all items.
  Users with fewer than 3 baskets are left out so the first basket is never the validation or
  test basket. streamrec embeds the text with the encoder, projects it with the learned text
  projection, and runs the user tower over that one pseudo-item; the raw encoder (cosine between
  the text and item titles) and popularity are scored on the same cases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from training.baselines import CoOccurrence, Popularity
from training.datasets import load_online_retail, load_sequences
from training.metrics import rank_items, summarize
from training.split import (
    EvalCases,
    Phase,
    ProtocolSplit,
    eval_cases,
    sample_users,
    split_retail,
    split_sequences,
)

Format = Literal["online-retail", "sequences"]
FORMATS: tuple[str, ...] = ("online-retail", "sequences")
BASELINES: tuple[str, ...] = ("popularity", "cooccurrence", "sasrec")
K = 10

ScoreFn = Callable[[np.ndarray, Phase], torch.Tensor]


def load_split(fmt: Format, path: Path | str, *, max_users: int = 0, seed: int = 0) -> ProtocolSplit:
    """Read a file in one of :data:`FORMATS` and split it by the protocol."""
    path = Path(path)
    if fmt == "online-retail":
        split = split_retail(load_online_retail(path), name=path.name)
    elif fmt == "sequences":
        split = split_sequences(load_sequences(path), name=path.name)
    else:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    return sample_users(split, max_users, seed=seed)


@dataclass
class Ranking:
    """Top-k lists and target ranks of one system over one phase's cases."""

    top: np.ndarray
    ranks: list[np.ndarray]
    seconds: float = 0.0

    def metrics(self, n_items: int, k: int = K) -> dict[str, float]:
        return summarize(self.ranks, self.top, n_items, k)


def rank_cases(
    score: ScoreFn,
    cases: EvalCases,
    *,
    k: int = K,
    batch_size: int = 512,
    desc: str | None = None,
) -> Ranking:
    """Score ``cases`` chunk by chunk with ``score(users, phase)`` and rank all items."""
    start = time.perf_counter()
    tops, ranks = [], []
    chunks = range(0, len(cases), batch_size)
    for lo in tqdm(chunks, desc=desc, leave=False, disable=desc is None):
        hi = min(lo + batch_size, len(cases))
        with torch.no_grad():
            scores = score(cases.users[lo:hi], cases.phase)
        top, rank = rank_items(scores, cases.exclude[lo:hi], cases.targets[lo:hi], k)
        tops.append(top)
        ranks.extend(rank)
    top = np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)
    return Ranking(top=top, ranks=ranks, seconds=time.perf_counter() - start)


@dataclass
class SystemResult:
    metrics: dict[str, float]
    train_s: float
    eval_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: round(float(v), 6) for key, v in self.metrics.items() if key != "cases"}
        out["cases"] = int(self.metrics.get("cases", 0))
        out["train_s"] = round(self.train_s, 2)
        out["eval_s"] = round(self.eval_s, 2)
        out.update(self.extra)
        return out


def evaluate_baseline(system: Popularity | CoOccurrence, split: ProtocolSplit, cases: EvalCases) -> SystemResult:
    start = time.perf_counter()
    system.fit(split)
    train_s = time.perf_counter() - start
    ranking = rank_cases(lambda users, phase: system.scores(split, users, phase), cases, desc=system.name)
    return SystemResult(ranking.metrics(split.n_items), train_s, ranking.seconds)


def protocol_description(split: ProtocolSplit, exclude_seen: bool, cases: EvalCases) -> dict[str, Any]:
    return {
        "unit": split.unit,
        "split": "per user, time-ordered: last unit = test, the one before = validation, rest = history",
        "ranking": "full ranking over all items, no sampled negatives; ties broken by item index",
        "k": K,
        "exclude_seen": exclude_seen,
        "exclusion": (
            "items of the user's history and validation are left out of the ranking and of the targets"
            if exclude_seen
            else "nothing left out; repeat purchases count as hits"
        ),
        "basket_scoring": "HR@10: any target in top 10; NDCG@10 over all targets; MRR of the best-ranked target",
        "training_data": "history units of all users; validation picks the epoch; test input = history + validation",
        "test_cases": len(cases),
        "users_without_targets": cases.skipped,
    }


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A fixed-width table of the systems' metrics and timings."""
    header = f"{'system':<14}{'HR@10':>9}{'NDCG@10':>9}{'MRR':>9}{'coverage':>10}{'train_s':>10}{'eval_s':>9}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<14}  not run: {r['error']}")
            continue
        lines.append(
            f"{name:<14}{r['hr@10']:>9.4f}{r['ndcg@10']:>9.4f}{r['mrr']:>9.4f}{r['coverage']:>10.4f}"
            f"{r['train_s']:>10.1f}{r['eval_s']:>9.1f}"
        )
    return "\n".join(lines)


def run_protocol(
    split: ProtocolSplit,
    *,
    baselines: Sequence[str] = BASELINES,
    exclude_seen: bool = True,
    systems_extra: dict[str, Callable[[ProtocolSplit, EvalCases], SystemResult]] | None = None,
) -> dict[str, Any]:
    """Run the selected baselines (and any extra systems) on ``split``; the JSON-ready result."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose among {list(BASELINES)}")
    cases = eval_cases(split, "test", exclude_seen=exclude_seen)
    results: dict[str, dict[str, Any]] = {}
    for name in baselines:
        if name == "popularity":
            results[name] = evaluate_baseline(Popularity(), split, cases).as_json()
        elif name == "cooccurrence":
            results[name] = evaluate_baseline(CoOccurrence(**_cooc_settings(split)), split, cases).as_json()
    for name, runner in (systems_extra or {}).items():
        results[name] = runner(split, cases).as_json()
    return {
        "dataset": split.describe(),
        "protocol": protocol_description(split, exclude_seen, cases),
        "results": results,
    }


def _cooc_settings(split: ProtocolSplit) -> dict[str, Any]:
    return {"window": 1, "recent": 2, "decay": 0.5} if split.unit == "basket" else {"window": 3, "recent": 3, "decay": 0.5}


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)
