"""The offline protocol end to end: load a file, split it, fit every system, rank, report.

Every system sees the same split in the same run and is ranked by the same code
(:mod:`training.metrics`): popularity, item co-occurrence, the RecBole SASRec peer (its own
venv, :mod:`training.peer`) and streamrec's two-tower model (:mod:`training.fit`).

Where units have times (Online Retail baskets), **fresh popularity** is scored too
(:class:`FreshPopularity`): alone (``fresh_popularity``), and blended into streamrec's and the
peer's scores (``streamrec+fresh_popularity``, ``sasrec+fresh_popularity``) the way the worker's
ranker blends it into its candidates' similarity. Half-life and weight are picked on the
validation cases, the same grid for both systems.

Cold start (reported beside the warm figures, streamrec and popularity only):

* **new items** (catalogs with item text): a deterministic ``cold_fraction`` of the items (by a
  hash of the item id) is removed from all training data of a separately trained model. Test
  cases are the users whose test unit holds at least one such item; the targets are those items,
  ranked among all items. An unseen item's vector comes from its text alone: the learned vector
  of a known item whose text it nearly repeats (:mod:`inference.text_siblings`, as the worker
  places it; a mix of that and its own where the texts are a little further apart), else the
  content vector that stands in for dropped ids in training (:mod:`training.model`);
  ``sibling_tradeoff`` scores other similarities, ramps and none, with the validation phase's
  new-item HR@10 and whole baskets' NDCG@10 to choose by. The held-out items are
  left out of the training loss (not even negatives: they do not exist yet). Beside it, the
  same model on warm items scored the same way (``streamrec_warm_slices``: the known items cut
  by a hash into slices of the held-out one's size, each slice's items the targets, averaged),
  the same model on the test units' other items (``streamrec_warm_targets``: ~10 targets per
  case where a new-item case has ~1, so HR@10 is not comparable), and the main model on the
  new items' cases once it has learned them (``streamrec_items_known``).
* **text-only users** (catalogs with item text): a user is represented only by one text, the
  titles of the items of their first basket joined by ", " — as if they had typed what they
  like — and nothing else (no item ids, no other history, nothing excluded from the ranking).
  Two groups, reported apart:

  - ``text_only_new_users``: the users with exactly two baskets. Their first basket is the
    split's validation unit and their second its test unit, so no training example contains
    them: they are the new customers the text stands in for, and the target is what they bought
    next (their second basket).
  - ``text_only_users``: the users with three or more baskets; the target is their test basket,
    often months after the first, where popularity is hard to beat.

  streamrec reads the text as the interests it lists (its comma-separated phrases), makes each
  phrase a pseudo-item (its content vector: the projected embedding plus its title words) and
  runs the user tower over them as one basket; beside the tower's scores it adds the phrase
  match (each item's best cosine between its title and a phrase), weighted by a weight picked
  on the older group's validation baskets (:class:`TextUsers`). The tower alone, the phrase
  match alone, the raw encoder over the whole text and popularity are scored on the same cases.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from training.baselines import CoOccurrence, Popularity
from training.datasets import load_online_retail, load_sequences
from training.fit import FitConfig, FitResult, fit, score_users
from training.fresh_popularity import decayed_counts, log_scaled_rows, training_purchases
from training.metrics import rank_items, summarize
from training.model import TowerConfig, TwoTower
from training.served import SERVED_DEPTH, served_history_scores, served_intent_scores
from training.tower_export import export_tower, history_windows
from training.split import (
    EvalCases,
    Phase,
    ProtocolSplit,
    eval_cases,
    held_out_items,
    sample_users,
    split_retail,
    split_sequences,
    warm_slices,
)
from inference.title_words import TitleWords
from training.title_words import with_title_words

Format = Literal["online-retail", "sequences"]
FORMATS: tuple[str, ...] = ("online-retail", "sequences")
BASELINES: tuple[str, ...] = ("popularity", "cooccurrence", "sasrec")
K = 10
# Factors by which the new-item cold start lengthens the held-out items' vectors, beside the
# vectors as trained (factor 1.0, the model's own new-item and warm rankings).
BOOST_FACTORS = (1.1, 1.2, 1.3, 1.4)
# (text cosine from which a new item takes its text sibling's vector, ramp below it over which it
# mixes in; None: content alone) the new-item cold start also tries, beside the model's own.
SIBLING_PLACEMENTS: tuple[tuple[float | None, float], ...] = (
    (None, 0.0), (0.8, 0.0), (0.85, 0.0), (0.85, 0.05), (0.85, 0.1), (0.85, 0.15), (0.9, 0.0), (0.95, 0.0),
)
# Fresh popularity (catalogs with unit times): half-lives and blend weights tried on validation.
FRESH_HALF_LIVES_DAYS = (3.0, 7.0, 30.0)
# Weights of the phrase match beside the text-only users' tower scores (standardized), picked on
# validation; 0 declines it.
TEXT_MATCH_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
FRESH_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # 0: the blend may be declined (ties: the first wins)

ScoreFn = Callable[[np.ndarray, Phase], torch.Tensor]
log = logging.getLogger(__name__)


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


def evaluate_baseline(
    system: Popularity | CoOccurrence, split: ProtocolSplit, cases: EvalCases, *, progress: bool = True
) -> SystemResult:
    start = time.perf_counter()
    system.fit(split)
    train_s = time.perf_counter() - start
    ranking = rank_cases(lambda users, phase: system.scores(split, users, phase), cases,
                         desc=system.name if progress else None)
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
    w = max([14, *(len(name) + 1 for name in results)])
    header = f"{'system':<{w}}{'HR@10':>9}{'NDCG@10':>9}{'MRR':>9}{'coverage':>10}{'train_s':>10}{'eval_s':>9}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<{w}}  not run: {r['error']}")
            continue
        lines.append(
            f"{name:<{w}}{r['hr@10']:>9.4f}{r['ndcg@10']:>9.4f}{r['mrr']:>9.4f}{r['coverage']:>10.4f}"
            f"{r['train_s']:>10.1f}{r['eval_s']:>9.1f}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class EvaluateOptions:
    """What :func:`evaluate_split` runs. ``epochs``: streamrec's maximum (early stopping picks the
    epoch); ``peer_epochs``: RecBole SASRec's maximum (bounded: an epoch is slow on CPU)."""

    baselines: tuple[str, ...] = BASELINES
    exclude_seen: bool = True
    bought_out_of_softmax: bool = True
    epochs: int | None = None
    time_budget_s: float | None = None
    peer_epochs: int = 5
    peer_timeout_s: float | None = None
    cold_start: bool = True
    served: bool = True
    export_tower: Path | None = None
    cold_fraction: float = 0.1
    data_dir: Path | None = None
    progress: bool = True
    seed: int = 0


def _data_dir(options: EvaluateOptions) -> Path:
    if options.data_dir is not None:
        return Path(options.data_dir)
    from inference.settings import InferenceSettings

    return InferenceSettings().data_dir


def streamrec_config(split: ProtocolSplit, options: EvaluateOptions, *, cold: bool = False) -> FitConfig:
    """streamrec's settings for a catalog: SASRec-sized for item sequences; for baskets a longer
    window with unit recency, and id dropout where there is text (so text alone places items)."""
    has_text = split.item_text is not None
    if split.unit == "item":
        tower = TowerConfig(
            dim=64, layers=2, heads=2, max_len=50, dropout=0.2, id_dropout=0.3 if cold else 0.0,
            last_item_skip=True,
        )
        # The budget keeps the default Beauty run (training + ranking) within 30 minutes on a
        # shared 2-core CPU (measured: early stopping ended it after 15 epochs, 13 min in all).
        base = FitConfig(
            tower=tower, lr=1e-3, batch_size=128, patience=3, warm_start_window=3, time_budget_s=1500.0
        )
    else:
        tower = TowerConfig(
            dim=64, layers=2, heads=2, max_len=100, dropout=0.2,
            id_dropout=0.5 if has_text else 0.0, unit_recency=True, last_item_skip=True,
        )
        # Validation NDCG@10 on ~2,600 baskets is noisy from epoch to epoch: with a patience of 4
        # Online Retail runs stopped anywhere from epoch 14 to 28, and the short ones scored
        # 0.059-0.062 on test against 0.063-0.065 for the long ones; 8 lets it run its course.
        base = FitConfig(tower=tower, lr=1e-3, batch_size=64, patience=8, warm_start_window=1)
    return replace(
        base,
        epochs=options.epochs or base.epochs,
        exclude_seen=options.exclude_seen,
        bought_out_of_softmax=options.bought_out_of_softmax,
        time_budget_s=options.time_budget_s if options.time_budget_s is not None else base.time_budget_s,
        seed=options.seed,
        progress=options.progress,
    )


def _cpu_seconds() -> float:
    return time.process_time()


def run_streamrec(
    split: ProtocolSplit,
    cases: EvalCases,
    options: EvaluateOptions,
    text: np.ndarray | None,
) -> tuple[SystemResult, FitResult]:
    config = streamrec_config(split, options)
    cpu = _cpu_seconds()
    result = fit(split, config, text=text)
    train_cpu = _cpu_seconds() - cpu
    model = result.model
    with torch.no_grad():
        item_vectors = model.items()
    ranking = rank_cases(
        lambda users, phase: score_users(model, split, users, phase, item_vectors), cases,
        desc="streamrec" if options.progress else None,
    )
    extra = {
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_cpu_s": round(train_cpu, 1),
        "validation_ndcg@10": round(result.best_validation["ndcg@10"], 6),
        "config": config.tower.as_dict() | {"lr": config.lr, "batch_size": config.batch_size},
    }
    return SystemResult(ranking.metrics(split.n_items), result.train_s, ranking.seconds, extra), result


def _case_times(split: ProtocolSplit, cases: EvalCases) -> np.ndarray:
    """When each case's target unit happened."""
    assert split.unit_times is not None
    position = -2 if cases.phase == "validation" else -1
    return np.asarray([split.unit_times[int(u)][position] for u in cases.users], dtype=np.float64)


def _rank_matrix(scores: np.ndarray, cases: EvalCases, users: np.ndarray | None = None) -> Ranking:
    """Rank precomputed scores, one row per user of ``users`` (default: ``cases``' own, in order)."""
    rows = {int(u): j for j, u in enumerate(cases.users if users is None else users)}
    return rank_cases(lambda users, phase: torch.as_tensor(scores[[rows[int(u)] for u in users]]), cases)


class FreshPopularity:
    """Fresh popularity for catalogs with unit times, at every case of both phases: training
    purchases before the case's time, decayed, log-scaled to [0, 1] per case as the worker's
    ranker scales its candidates (:func:`inference.ranking.rank`). Half-life and weight are
    picked on the validation cases (NDCG@10), then scored once on test."""

    def __init__(self, split: ProtocolSplit, options: EvaluateOptions, test_cases: EvalCases) -> None:
        start = time.perf_counter()
        self.split = split
        self.phases = {"validation": eval_cases(split, "validation", exclude_seen=options.exclude_seen),
                       "test": test_cases}
        events = training_purchases(split)
        self.matrices = {
            (phase, days): log_scaled_rows(
                decayed_counts(*events, _case_times(split, cases), split.n_items, days * 86_400.0)
            ).astype(np.float32)
            for phase, cases in self.phases.items() for days in FRESH_HALF_LIVES_DAYS
        }
        self.seconds = time.perf_counter() - start

    def _validation_ndcg(self, scores: np.ndarray) -> float:
        return _rank_matrix(scores, self.phases["validation"]).metrics(self.split.n_items)["ndcg@10"]

    def alone(self) -> dict[str, Any]:
        """The ``fresh_popularity`` baseline: the half-life picked on validation."""
        start = time.perf_counter()
        choice = {days: self._validation_ndcg(self.matrices["validation", days]) for days in FRESH_HALF_LIVES_DAYS}
        days = max(choice, key=choice.get)
        ranking = _rank_matrix(self.matrices["test", days], self.phases["test"])
        return SystemResult(
            ranking.metrics(self.split.n_items), self.seconds + time.perf_counter() - start, ranking.seconds,
            {"half_life_days": days, "validation_ndcg@10": round(choice[days], 6)},
        ).as_json()

    def blended(self, scores: dict[str, np.ndarray], train_s: float) -> dict[str, Any]:
        """A system's scores (phase -> one row per case, in the cases' order) plus a weight times
        fresh popularity; weight 0 (the system alone) is among the choices."""
        start = time.perf_counter()
        grid = [(FRESH_HALF_LIVES_DAYS[0], 0.0)] + [
            (d, w) for d in FRESH_HALF_LIVES_DAYS for w in FRESH_WEIGHTS if w > 0]
        choice = {(days, w): self._validation_ndcg(scores["validation"] + w * self.matrices["validation", days])
                  for days, w in grid}
        days, weight = max(choice, key=choice.get)
        ranking = _rank_matrix(scores["test"] + weight * self.matrices["test", days], self.phases["test"])
        return SystemResult(
            ranking.metrics(self.split.n_items), train_s + self.seconds + time.perf_counter() - start, ranking.seconds,
            {"half_life_days": days, "weight": weight, "validation_ndcg@10": round(choice[days, weight], 6),
             "validation_ndcg@10_without": round(choice[grid[0]], 6),
             "selected_on": "validation NDCG@10 over half-lives x weights (weight 0: the system alone)"},
        ).as_json()


def streamrec_scores(model: TwoTower, split: ProtocolSplit, cases: EvalCases) -> np.ndarray:
    """streamrec's scores of all items, one row per case."""
    with torch.no_grad():
        item_vectors = model.items()
        return torch.cat([score_users(model, split, cases.users[lo:lo + 512], cases.phase, item_vectors)
                          for lo in range(0, len(cases), 512)]).numpy()


def run_sasrec_peer(
    split: ProtocolSplit, cases: EvalCases, options: EvaluateOptions, fresh: FreshPopularity | None = None,
) -> dict[str, dict[str, Any]]:
    """RecBole SASRec in its own venv, and (with ``fresh``) its scores blended with fresh
    popularity exactly as streamrec's are; raises PeerUnavailable with the reason when it cannot run."""
    from training.peer import PeerSettings, run_peer

    data_dir = _data_dir(options)
    settings = PeerSettings(epochs=options.peer_epochs, timeout_s=options.peer_timeout_s, seed=2020 + options.seed)
    start = time.perf_counter()
    run = run_peer(split, cases, data_dir / "peer-runs", settings, venv=data_dir / "peer-venv", progress=options.progress,
                   score_phases=fresh.phases if fresh is not None else None)
    total = time.perf_counter() - start
    metrics = summarize(run.ranks, run.top, split.n_items)
    info = run.info
    extra = {
        "epochs": info["epochs"],
        "best_epoch": info["best_epoch"],
        "max_epochs": options.peer_epochs,
        "total_s": round(total, 1),
        "note": (
            f"RecBole {info['recbole']} SASRec (CE), own venv (numpy {info['numpy']}, torch {info['torch']}); "
            "trained on the same split, ranked by our code with the same exclusion; "
            "RecBole itself masks no history for sequential models"
        ),
        "training_rows": info["rows"]["train"],
    }
    out = {"sasrec": SystemResult(metrics, info["train_s"], info["eval_s"], extra).as_json()}
    if fresh is not None:
        out["sasrec+fresh_popularity"] = fresh.blended(run.scores, info["train_s"])
    return out


def evaluate_split(split: ProtocolSplit, options: EvaluateOptions = EvaluateOptions()) -> dict[str, Any]:
    """The whole protocol on ``split``: baselines, the peer, streamrec, cold start (where the
    catalog has item text). Returns the JSON-ready result."""
    unknown = [b for b in options.baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose among {list(BASELINES)}")
    cases = eval_cases(split, "test", exclude_seen=options.exclude_seen)
    if len(cases) == 0:
        raise ValueError("no test case left: every user's test unit was already seen")
    # streamrec's item tower learns a vector per title word; the baselines ignore attributes.
    split, vocabulary = with_title_words(split)
    results: dict[str, dict[str, Any]] = {}
    for name in options.baselines:
        if name == "popularity":
            results[name] = evaluate_baseline(Popularity(), split, cases, progress=options.progress).as_json()
        elif name == "cooccurrence":
            results[name] = evaluate_baseline(
                CoOccurrence(**_cooc_settings(split)), split, cases, progress=options.progress
            ).as_json()
    text = None
    encoder = None
    if split.item_text is not None:
        from training.text import encode_texts, open_encoder

        encoder = open_encoder(threads=torch.get_num_threads())
        text = encode_texts(encoder, split.item_text, _data_dir(options) / "cache", desc="item titles" if options.progress else None)
    streamrec, fitted = run_streamrec(split, cases, options, text)
    results["streamrec"] = streamrec.as_json()
    if encoder is not None and (options.served or options.export_tower is not None):
        results.update(served_event_encoder(split, cases, fitted, encoder, vocabulary, options))
    fresh = None
    if split.unit_times is not None:
        fresh = FreshPopularity(split, options, cases)
        results["fresh_popularity"] = fresh.alone()
        results["streamrec+fresh_popularity"] = fresh.blended(
            {phase: streamrec_scores(fitted.model, split, c) for phase, c in fresh.phases.items()}, fitted.train_s)
    if "sasrec" in options.baselines:
        from training.peer import PeerUnavailable

        try:
            results.update(run_sasrec_peer(split, cases, options, fresh))
        except PeerUnavailable as exc:
            log.warning("RecBole SASRec peer not run: %s", exc)
            results["sasrec"] = {"error": str(exc)}
    out: dict[str, Any] = {
        "dataset": split.describe(),
        "protocol": protocol_description(split, options.exclude_seen, cases),
        "results": results,
    }
    if options.cold_start and text is not None and encoder is not None:
        out["cold_start"] = {
            "new_items": cold_items(split, options, text, results["streamrec"], fitted.model),
            "text_only_users": text_only_users(
                split, fitted.model, encoder, text, vocabulary, new_users=False, progress=options.progress
            ),
        }
        out["cold_start"]["text_only_new_users"] = text_only_users(
            split, fitted.model, encoder, text, vocabulary, new_users=True,
            weight=out["cold_start"]["text_only_users"]["match_weight"], progress=options.progress,
        )
    return out


def served_event_encoder(
    split: ProtocolSplit, cases: EvalCases, fitted: FitResult, encoder: Any, vocabulary: TitleWords | None,
    options: EvaluateOptions,
) -> dict[str, dict[str, Any]]:
    """streamrec's model as the worker serves it (training/served.py): exported for the worker
    (into ``options.export_tower`` when given, else a temporary folder), then every test user's
    past replayed into a worker's engine and its answer ranked. The ``worker_event_encoder`` row
    differs from ``streamrec`` by what serving changes: the worker's window of recent items (not
    the whole history), ONNX instead of torch, and its exclusion of purchased items."""
    start = time.perf_counter()
    model = fitted.model
    with torch.no_grad():
        item_vectors = model.items().numpy()
    scale_users = cases.users[:: max(1, len(cases) // 500)]
    with tempfile.TemporaryDirectory(prefix="streamrec-tower-") as tmp:
        folder = export_tower(
            model, split.item_ids, Path(options.export_tower or Path(tmp) / "tower"), vocabulary=vocabulary,
            text_space=encoder.version, scale_windows=history_windows(split, scale_users, "validation", item_vectors),
            info={"trained_on": split.describe(), "validation": fitted.best_validation,
                  "train_s": round(fitted.train_s, 1)},
        )
        export_s = time.perf_counter() - start
        if not options.served:
            return {}
        scores = served_history_scores(split, cases.users, cases.phase, encoder, folder)
    ranking = _rank_matrix(scores.numpy(), cases)
    from inference.profiles import MAX_RECENT

    extra = {"window_items": MAX_RECENT, "depth": SERVED_DEPTH, "export_s": round(export_s, 1),
             "note": "the streamrec model exported (ONNX user tower, item tables) and served by the worker's own "
                     "engine after replaying each user's past as purchase events; ranked by the tower score alone"}
    return {"worker_event_encoder": SystemResult(ranking.metrics(split.n_items), fitted.train_s + export_s,
                                                 time.perf_counter() - start - export_s, extra).as_json()}


def cold_items(
    split: ProtocolSplit, options: EvaluateOptions, text: np.ndarray, warm: dict[str, Any], known: TwoTower,
) -> dict[str, Any]:
    """New items (module docstring): a model trained without a held-out slice of the catalog.

    ``known``: the model trained on every item, scored on the same cases and targets — what
    the held-out items would reach had they been trained on. A test basket holds ~10 times more
    warm targets than new ones, and HR@10 counts a hit on any target, so the warm HR@10 of the
    issue's comparison is not reachable by new items even for a model that knew them."""
    drop = held_out_items(split, options.cold_fraction)
    cold_cases = eval_cases(split, "test", exclude_seen=options.exclude_seen, only_items=drop)
    warm_cases = eval_cases(split, "test", exclude_seen=options.exclude_seen, only_items=~drop)
    config = streamrec_config(split, options, cold=True)
    result = fit(split, config, text=text, drop=drop)
    model = result.model
    with torch.no_grad():
        item_vectors = model.items()
    norms = item_vectors.norm(dim=1)
    held_out = torch.from_numpy(drop)
    validation = eval_cases(split, "validation", exclude_seen=options.exclude_seen)
    validation_cold = eval_cases(split, "validation", exclude_seen=options.exclude_seen, only_items=drop)

    def ranked_with(vectors: torch.Tensor, progress: bool = False) -> tuple[Ranking, ...]:
        """The new-item, warm-target, validation new-item and whole validation-basket rankings
        with these item vectors."""
        def score(users: np.ndarray, phase: Phase) -> torch.Tensor:
            return score_users(model, split, users, phase, vectors)

        return (rank_cases(score, cold_cases, desc="cold items" if progress else None),
                rank_cases(score, warm_cases, desc="warm items" if progress else None),
                rank_cases(score, validation_cold), rank_cases(score, validation))

    def tradeoff_row(factor: float, cold: Ranking, warm: Ranking, validation_new: Ranking,
                     validation: Ranking) -> dict[str, float]:
        return {
            "factor": factor,
            "new_items_hr@10": round(cold.metrics(split.n_items)["hr@10"], 4),
            "warm_targets_hr@10": round(warm.metrics(split.n_items)["hr@10"], 4),
            # The validation phase: the figures a placement could be chosen by without the test.
            "validation_new_items_hr@10": round(validation_new.metrics(split.n_items)["hr@10"], 4),
            "validation_ndcg@10": round(validation.metrics(split.n_items)["ndcg@10"], 4),
        }

    cold, same_model_warm, *as_trained_validation = ranked_with(item_vectors, options.progress)
    # Lengthening the text-made vectors lifts new items in every ranking, at the warm targets'
    # expense: what reaching a cold-start figure by boosting new items would cost.
    tradeoff = [tradeoff_row(1.0, cold, same_model_warm, *as_trained_validation)]
    for factor in BOOST_FACTORS:
        boosted = item_vectors.clone()
        boosted[held_out] *= factor
        tradeoff.append(tradeoff_row(factor, *ranked_with(boosted)))
    # Text siblings: how close a new item's text must be to a known item's to take (or mix in)
    # its vector.
    served = (config.tower.sibling_similarity, config.tower.sibling_ramp if config.tower.sibling_similarity else 0.0)
    siblings = []
    for similarity, ramp in SIBLING_PLACEMENTS + ((served,) if served not in SIBLING_PLACEMENTS else ()):
        with torch.no_grad():
            placed = model.items.placed(similarity, ramp)
        row = tradeoff_row(1.0, *ranked_with(placed))
        del row["factor"]
        weights = model.items.siblings(similarity, ramp)[1][held_out] if similarity is not None else torch.zeros(1)
        siblings.append({"min_similarity": similarity, "ramp": ramp, "placed_by_sibling": int((weights == 1).sum()),
                         "mixed_with_sibling": int(((weights > 0) & (weights < 1)).sum()), **row})
    with torch.no_grad():
        known_vectors = known.items()
    known_ranking = rank_cases(lambda u, p: score_users(known, split, u, p, known_vectors), cold_cases)
    # A user's test scores do not depend on which targets count: every user of a warm slice has a
    # warm target, so the warm cases' scores, computed once, rank every slice.
    start = time.perf_counter()
    warm_scores = streamrec_scores(model, split, warm_cases)
    slice_rankings = [
        _rank_matrix(warm_scores, eval_cases(split, "test", exclude_seen=options.exclude_seen, only_items=items),
                     warm_cases.users)
        for items in warm_slices(split, drop)
    ]
    slices_s = time.perf_counter() - start
    slice_metrics = [r.metrics(split.n_items) for r in slice_rankings]
    popularity = Popularity().fit(split, drop)
    pop = rank_cases(lambda u, p: popularity.scores(split, u, p), cold_cases)
    results = {
        "streamrec": SystemResult(cold.metrics(split.n_items), result.train_s, cold.seconds,
                                  {"epochs": result.epochs, "best_epoch": result.best_epoch}).as_json(),
        "popularity": SystemResult(pop.metrics(split.n_items), 0.0, pop.seconds).as_json(),
        "streamrec_warm_targets": SystemResult(same_model_warm.metrics(split.n_items), result.train_s,
                                               same_model_warm.seconds).as_json(),
        "streamrec_items_known": SystemResult(known_ranking.metrics(split.n_items), 0.0,
                                              known_ranking.seconds).as_json(),
        "streamrec_warm_slices": SystemResult(
            {m: float(np.mean([s[m] for s in slice_metrics])) for m in ("hr@10", "ndcg@10", "mrr", "coverage")}
            | {"cases": sum(s["cases"] for s in slice_metrics)},
            result.train_s,
            slices_s,
            {
                "slices": len(slice_rankings),
                "hr@10_per_slice": [round(s["hr@10"], 4) for s in slice_metrics],
                "cases_per_slice": [int(s["cases"]) for s in slice_metrics],
            },
        ).as_json(),
    }
    return {
        "protocol": (
            f"{int(drop.sum())} items ({options.cold_fraction:.0%} of the catalog, chosen by a hash of the "
            "item id) removed from all training data; cases: users whose test unit holds at least one of "
            "them; targets: those items, ranked among all items; their vectors come from text alone"
            + (f" (the learned vector of a known item whose text has a cosine >= {config.tower.sibling_similarity} "
               f"with theirs; from {config.tower.sibling_similarity - config.tower.sibling_ramp:.2f} up a mix of "
               "that and their own, rising linearly; else their text-made content vector). "
               if config.tower.sibling_similarity else ". ")
            + "streamrec_warm_targets: the same model on the other items of the test units. "
            "streamrec_items_known: the main model, which trained on every item, on the same cases and "
            "targets (what these items reach once their ids are learned). streamrec_warm_slices: the "
            "same model with the known items split by a hash into slices the held-out one's size, each "
            "scored like it (cases: test units holding one of the slice's items; targets: those "
            "items), averaged: the warm figure measured the way the new items' is."
        ),
        "held_out_items": int(drop.sum()),
        # A new item ranks only if its text-made vector is on the trained vectors' scale.
        "median_vector_norm": {
            "held_out": round(float(norms[held_out].median()), 4),
            "trained": round(float(norms[~held_out].median()), 4),
        },
        "results": results,
        "warm_hr@10": warm.get("hr@10"),
        "cold_over_warm_hr@10": round(results["streamrec"]["hr@10"] / warm["hr@10"], 4) if warm.get("hr@10") else None,
        "boost_tradeoff": tradeoff,
        "sibling_similarity": config.tower.sibling_similarity,
        "sibling_ramp": config.tower.sibling_ramp,
        "sibling_tradeoff": siblings,
        "cold_over_warm_slices_hr@10": (
            round(results["streamrec"]["hr@10"] / results["streamrec_warm_slices"]["hr@10"], 4)
            if results["streamrec_warm_slices"]["hr@10"] else None
        ),
        "cold_over_known_hr@10": (
            round(results["streamrec"]["hr@10"] / results["streamrec_items_known"]["hr@10"], 4)
            if results["streamrec_items_known"]["hr@10"] else None
        ),
    }


def first_basket_texts(split: ProtocolSplit, users: np.ndarray) -> list[str]:
    """Each user's first unit as text: its items' titles, in order, joined by ", "."""
    assert split.item_text is not None
    return [", ".join(dict.fromkeys(split.item_text[i] for i in split.units[int(u)][0])) for u in users]


def _text_user_cases(split: ProtocolSplit, users: np.ndarray, phase: Phase) -> EvalCases:
    """Text-only cases: ``phase``'s unit of each user, whole (nothing excluded: the user has no
    known past)."""
    empty = np.zeros(0, dtype=np.int64)
    return EvalCases(
        phase=phase,
        users=users,
        exclude=[empty] * len(users),
        targets=[np.unique(np.asarray(split.target(int(u), phase), dtype=np.int64)) for u in users],
        skipped=split.n_users - len(users),
    )


def _standardized(scores: torch.Tensor) -> torch.Tensor:
    """Each row to mean 0, standard deviation 1: a scale that a fixed weight can be added to."""
    return (scores - scores.mean(dim=1, keepdim=True)) / scores.std(dim=1, keepdim=True).clamp(min=1e-6)


class TextUsers:
    """Text-only users' scores (module docstring) from one text each.

    The text is read as the interests it lists (:func:`inference.interest_phrases.interest_phrases`). Each
    phrase is embedded by the encoder and becomes a pseudo-item: its content vector (projected
    embedding plus title words), the user tower reading them as one basket. Beside the tower,
    the phrase match (each item's best cosine between its title and any phrase) keeps what the
    user named; the blend is the tower's standardized scores plus ``weight`` × the match."""

    def __init__(
        self, split: ProtocolSplit, model: TwoTower, encoder: Any, text: np.ndarray,
        vocabulary: TitleWords | None, users: np.ndarray, progress: bool,
    ) -> None:
        from inference.interest_phrases import interest_phrases
        from training.text import encode_texts

        self.row_of = {int(u): n for n, u in enumerate(users)}
        texts = first_basket_texts(split, users)
        phrases = [interest_phrases(t) for t in texts]
        unique = sorted({p for ps in phrases for p in ps})
        at = {p: n for n, p in enumerate(unique)}
        desc = "user texts" if progress else None
        self.text = torch.from_numpy(encode_texts(encoder, texts, None, desc=desc))
        phrase_vectors = torch.from_numpy(encode_texts(encoder, unique, None, desc=desc))
        item_text = torch.from_numpy(text)
        with torch.no_grad():
            model.eval()
            item_vectors = model.items()
            content = model.items.embed_text(phrase_vectors, [vocabulary.of(p) for p in unique] if vocabulary else None)
            rows = [torch.as_tensor([at[p] for p in ps], dtype=torch.int64) for ps in phrases]
            user_vectors = model.text_user_vectors([content[r] for r in rows], item_vectors)
            self.tower = _standardized(user_vectors @ item_vectors.T)
            self.match = torch.stack([(phrase_vectors[r] @ item_text.T).max(dim=0).values for r in rows])
        self.item_text = item_text

    def rows(self, users: np.ndarray) -> torch.Tensor:
        return torch.as_tensor([self.row_of[int(u)] for u in users])

    def ranked(self, cases: EvalCases, weight: float) -> Ranking:
        def score(users: np.ndarray, phase: Phase) -> torch.Tensor:
            rows = self.rows(users)
            return self.tower[rows] + weight * self.match[rows]

        return rank_cases(score, cases)

    def pick_weight(self, validation: EvalCases) -> tuple[float, dict[float, float]]:
        """The weight of :data:`TEXT_MATCH_WEIGHTS` with the best NDCG@10 on ``validation``."""
        n_items = self.tower.shape[1]
        choice = {w: self.ranked(validation, w).metrics(n_items)["ndcg@10"] for w in TEXT_MATCH_WEIGHTS}
        return max(choice, key=choice.get), choice


def text_only_users(
    split: ProtocolSplit, model: TwoTower, encoder: Any, text: np.ndarray, vocabulary: TitleWords | None, *,
    new_users: bool, weight: float | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Text-only users (module docstring): one text per user, their test unit ranked.

    ``new_users=False``: users with >= 3 units (the first unit is history, the test unit comes
    months later); the match weight is picked on their validation unit. ``new_users=True``:
    users with exactly 2 units, whose first basket is the validation unit and second the test
    unit; no training example ever saw them, so they are the new customers a typed text stands
    in for, and the target is what they bought next. They have no unit to pick a weight on:
    ``weight`` (the other group's pick) is required."""
    keep = (lambda n: n == 2) if new_users else (lambda n: n >= 3)
    users = np.asarray([u for u in range(split.n_users) if keep(len(split.units[u]))], dtype=np.int64)
    cases = _text_user_cases(split, users, "test")
    scores = TextUsers(split, model, encoder, text, vocabulary, users, progress)
    picked: dict[str, Any] = {}
    if weight is None:
        if new_users:
            raise ValueError("new text-only users have no validation unit: pass the weight picked for the others")
        weight, choice = scores.pick_weight(_text_user_cases(split, users, "validation"))
        picked = {"validation_ndcg@10_by_weight": {str(w): round(v, 6) for w, v in choice.items()}}
    popularity = Popularity().fit(split)
    rows = scores.rows
    texts = first_basket_texts(split, users)
    from inference.settings import InferenceSettings

    phrases = InferenceSettings().intent_phrases  # as the worker would run here (STREAMREC_INTENT_PHRASES)
    served = {n: served_intent_scores(split, texts, encoder, phrases=n) for n in (phrases, 0)}
    ranked = {
        "streamrec": scores.ranked(cases, weight),
        "streamrec_tower": scores.ranked(cases, 0.0),
        "worker_intent": rank_cases(lambda u, p: served[phrases][rows(u)], cases),
        "worker_intent_whole_text": rank_cases(lambda u, p: served[0][rows(u)], cases),
        "encoder_phrase_match": rank_cases(lambda u, p: scores.match[rows(u)], cases),
        "encoder_cosine": rank_cases(lambda u, p: scores.text[rows(u)] @ scores.item_text.T, cases),
        "popularity": rank_cases(lambda u, p: popularity.scores(split, u, p), cases),
    }
    results = {name: SystemResult(r.metrics(split.n_items), 0.0, r.seconds).as_json() for name, r in ranked.items()}
    who = (
        f"the {len(users)} users with exactly 2 units (never in any training example), each represented "
        "only by the titles of the items of their first basket joined by ', '; their second basket "
        if new_users else
        f"the {len(users)} users with >= 3 units, each represented only by the titles of the items of "
        "their first basket joined by ', '; their test unit (their last basket) "
    )
    pop = results["popularity"]
    return {
        "protocol": (
            who + "(all its items) is ranked among all items, nothing excluded, no item ids or other "
            "history used. streamrec: the user tower over the text's phrases as pseudo-items (content "
            "vectors: projected embedding + title words), standardized, plus match_weight x the phrase "
            "match; streamrec_tower: the tower alone; worker_intent: what a running worker answers the "
            f"text sent as an intent (training/served.py: the serving code over this catalog, its top "
            f"{SERVED_DEPTH}, exploration off, no popularity yet; a text over the intent limit cut after its "
            "last whole phrase; MRR counts ranks within that top only), which retrieves with the whole "
            f"text and each of its first {phrases} phrases (STREAMREC_INTENT_PHRASES); "
            "worker_intent_whole_text: the same with STREAMREC_INTENT_PHRASES=0 "
            "(the whole text only, as before 2026-12-07); encoder_phrase_match: each item's best cosine "
            "between its title and a phrase; encoder_cosine: cosine of the whole text's embedding with "
            "item title embeddings; popularity: training counts."
        ),
        "users": len(users),
        "match_weight": weight,
        **picked,
        "results": results,
        **{
            f"{system}_over_popularity_{metric}": (
                round(results[system][metric] / pop[metric], 3) if pop[metric] else None
            )
            for system in ("streamrec", "worker_intent") for metric in ("hr@10", "ndcg@10", "mrr")
        },
    }


def _cooc_settings(split: ProtocolSplit) -> dict[str, Any]:
    return {"window": 1, "recent": 2, "decay": 0.5} if split.unit == "basket" else {"window": 3, "recent": 3, "decay": 0.5}


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False)
