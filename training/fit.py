"""Training loop of the two-tower model: history -> next unit, full softmax over all items.

Training examples come from the history units only (DESIGN §4):

* item units (S3-Rec sequences): one window per user, the begin token then the history items;
  every position predicts the next item (SASRec-style, all positions trained at once);
* baskets: one example per history basket, the past baskets (last ``max_len`` items) predicting
  all items of that basket (cross-entropy averaged over the basket's items). Where the protocol
  excludes already-bought items (as the worker does), they are neither targets nor (by default,
  ``bought_out_of_softmax``) in the basket's softmax: the model is not taught to push down what
  it will never be asked to rank, which in a dot-product model fights the pull of the user's own
  past towards similar items. The price: new items placed by their text alone rank lower (text
  siblings, :mod:`inference.text_siblings`, win part of it back).

The loss is cross-entropy over all items (no sampled negatives; items held out of training are
left out of it: they are not in the catalog yet), which on CPU converges in far
fewer epochs than sampled losses. After each epoch the validation unit is ranked with the
protocol's exclusion and the epoch with the best NDCG@10 is kept (early stopping).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from training.baselines import cooccurrence_counts
from training.metrics import rank_items, summarize
from training.model import BEGIN, PAD, TowerConfig, TwoTower, windows
from training.split import EvalCases, Phase, ProtocolSplit, eval_cases, without_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    tower: TowerConfig = field(default_factory=TowerConfig)
    epochs: int = 200
    patience: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    exclude_seen: bool = True
    # Drop already-bought items from basket targets when the protocol excludes them.
    novel_targets: bool = True
    # ... and from the basket's softmax (False: they stay in it as negatives). Measured on Online
    # Retail: warm NDCG@10 +4.5% with them out, new items (placed by text alone) reach ~30% less.
    bought_out_of_softmax: bool = True
    val_users: int = 10_000
    # Start the item id embeddings from a factorisation of the training co-occurrences (0: off).
    warm_start_window: int = 0
    time_budget_s: float | None = None
    seed: int = 0
    progress: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    model: TwoTower
    epochs: int
    best_epoch: int
    best_validation: dict[str, float]
    history: list[dict[str, float]]
    train_s: float
    stopped: str


@dataclass
class Example:
    tokens: np.ndarray
    unit_age: np.ndarray
    positions: np.ndarray
    targets: list[np.ndarray]
    # Items left out of every query's softmax (the user's already-bought items, for baskets).
    known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def cooccurrence_embeddings(
    split: ProtocolSplit,
    dim: int,
    window: int,
    drop: np.ndarray | None = None,
    seed: int = 0,
    scale: float = 3.0,
) -> torch.Tensor:
    """Item vectors (n_items, dim) from a truncated SVD of the symmetric positive PMI of the
    training co-occurrences, rows scaled to norm ``scale`` (cosine ranks better than the raw
    U sqrt(S) here, and the scale makes the dot products usable logits at once); items without
    co-occurrences get small random vectors.

    A warm start for the id embeddings: the first epochs then refine item relations that the
    counts already show instead of discovering them from random vectors.
    """
    n = split.n_items
    rows, cols, values = cooccurrence_counts(split, window, drop)
    if len(values) == 0:
        return torch.zeros(n, dim)
    rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    values = np.concatenate([values, values])
    row_sum = np.bincount(rows, weights=values, minlength=n)
    total = values.sum()
    pmi = np.log(values * total / (row_sum[rows] * row_sum[cols]))
    keep = pmi > 0
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows[keep], cols[keep]])),
        torch.from_numpy(pmi[keep].astype(np.float32)),
        (n, n),
        check_invariants=False,
    ).coalesce()
    torch.manual_seed(seed)
    u, s, _ = torch.svd_lowrank(matrix, q=min(dim, n - 1), niter=4)
    vectors = u * s.sqrt()
    vectors = scale * vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-8)
    lonely = torch.from_numpy(np.bincount(rows[keep], minlength=n) == 0)
    vectors[lonely] = torch.randn(int(lonely.sum()), vectors.shape[1]) * 0.02
    if vectors.shape[1] < dim:
        vectors = torch.cat([vectors, torch.zeros(n, dim - vectors.shape[1])], dim=1)
    return vectors


def training_examples(
    split: ProtocolSplit, config: FitConfig, drop: np.ndarray | None = None
) -> list[Example]:
    """The examples of the module docstring, with the items of ``drop`` removed everywhere."""
    max_len = config.tower.max_len
    examples: list[Example] = []
    for u in range(split.n_users):
        units = without_items(split.history(u), drop)
        if not units:
            continue
        if split.unit == "item":
            seq = [BEGIN] + [unit[0] for unit in units]
            inputs, targets = seq[:-1][-(max_len + 1) :], seq[1:][-(max_len + 1) :]
            examples.append(
                Example(
                    tokens=np.asarray(inputs, dtype=np.int64),
                    unit_age=np.zeros(len(inputs), dtype=np.int64),
                    positions=np.arange(len(inputs)),
                    targets=[np.asarray([t], dtype=np.int64) for t in targets],
                )
            )
            continue
        novel = config.exclude_seen and config.novel_targets
        # The user's items in order of first purchase; a basket's known items are a prefix of
        # it (a view, so memory stays linear in the history, not quadratic).
        first_bought: dict[int, None] = {}
        known_before = []
        for unit in units:
            known_before.append(len(first_bought))
            first_bought.update(dict.fromkeys(unit))
        bought = np.fromiter(first_bought, dtype=np.int64, count=len(first_bought))
        for b, unit in enumerate(units):
            target = np.unique(np.asarray(unit, dtype=np.int64))
            known = bought[: known_before[b]] if novel else bought[:0]
            target = target[~np.isin(target, known)]
            if len(target) == 0:
                continue
            if not config.bought_out_of_softmax:
                known = bought[:0]
            tokens, ages = windows([units[:b]], max_len)
            examples.append(
                Example(
                    tokens=tokens[0].numpy(),
                    unit_age=ages[0].numpy(),
                    positions=np.asarray([tokens.shape[1] - 1]),
                    targets=[target],
                    known=known,
                )
            )
    return examples


def _batches(examples: list[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
    """Shuffled batches of similar length (sorted within pools of 50 batches): less padding."""
    order = rng.permutation(len(examples))
    pool = batch_size * 50
    batches = []
    for lo in range(0, len(order), pool):
        chunk = sorted(order[lo : lo + pool], key=lambda i: len(examples[i].tokens))
        batches += [[examples[i] for i in chunk[b : b + batch_size]] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(batch: list[Example]) -> tuple[torch.Tensor, ...]:
    length = max(len(e.tokens) for e in batch)
    tokens = torch.full((len(batch), length), PAD, dtype=torch.int64)
    ages = torch.zeros((len(batch), length), dtype=torch.int64)
    q_rows, q_pos, t_query, t_item, t_weight, k_query, k_item = [], [], [], [], [], [], []
    for b, e in enumerate(batch):
        pad = length - len(e.tokens)
        tokens[b, pad:] = torch.from_numpy(e.tokens)
        ages[b, pad:] = torch.from_numpy(e.unit_age)
        for pos, target in zip(e.positions, e.targets):
            query = len(q_rows)
            q_rows.append(b)
            q_pos.append(pad + int(pos))
            t_query.extend([query] * len(target))
            t_item.extend(target.tolist())
            t_weight.extend([1.0 / len(target)] * len(target))
            k_query.extend([query] * len(e.known))
            k_item.extend(e.known.tolist())
    return (
        tokens,
        ages,
        torch.as_tensor(q_rows),
        torch.as_tensor(q_pos),
        torch.as_tensor(t_query),
        torch.as_tensor(t_item),
        torch.as_tensor(t_weight, dtype=torch.float32),
        torch.as_tensor(k_query, dtype=torch.int64),
        torch.as_tensor(k_item, dtype=torch.int64),
    )


def batch_loss(model: TwoTower, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    tokens, ages, q_rows, q_pos, t_query, t_item, t_weight, k_query, k_item = batch
    item_vectors = model.items()
    hidden = model.encode(item_vectors, tokens, ages)
    logits = hidden[q_rows, q_pos] @ item_vectors.T
    # Items held out of training (id masked) are not in the catalog yet: not negatives either,
    # or the loss teaches the text projection to push their texts down, and they never rank.
    # (A large finite value, not -inf: a 0 target weight times -inf would be NaN.)
    logits = logits.masked_fill(model.items.id_mask[:, 0] == 0, -1e9)
    # Items the user already has are never ranked (the protocol's and the worker's exclusion).
    # In place: logits is masked_fill's fresh tensor, and a copy of a (queries x items) matrix
    # per batch is what item sequences, which have no such items, would pay for nothing.
    logits.index_put_((k_query, k_item), torch.tensor(-1e9))
    if len(t_query) == len(q_rows):  # one target per query: the fused, cheaper path
        return F.cross_entropy(logits, t_item)
    # Several targets (a basket): cross-entropy against the uniform distribution over them.
    target = torch.zeros_like(logits)
    target[t_query, t_item] = t_weight
    return F.cross_entropy(logits, target)


def score_users(
    model: TwoTower, split: ProtocolSplit, users: np.ndarray, phase: Phase, item_vectors: torch.Tensor
) -> torch.Tensor:
    """Scores of all items for ``users`` given their known past for ``phase``."""
    tokens, ages = windows([split.inputs(int(u), phase) for u in users], model.config.max_len)
    hidden = model.encode(item_vectors, tokens, ages)[:, -1]
    return hidden @ item_vectors.T


def evaluate_cases(
    model: TwoTower, split: ProtocolSplit, cases: EvalCases, batch_size: int = 512
) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        item_vectors = model.items()
        tops, ranks = [], []
        for lo in range(0, len(cases), batch_size):
            users = cases.users[lo : lo + batch_size]
            scores = score_users(model, split, users, cases.phase, item_vectors)
            top, rank = rank_items(scores, cases.exclude[lo : lo + batch_size], cases.targets[lo : lo + batch_size])
            tops.append(top)
            ranks += rank
    top = np.concatenate(tops) if tops else np.zeros((0, 10), dtype=np.int64)
    return summarize(ranks, top, split.n_items)


def _subsample(cases: EvalCases, n: int, seed: int) -> EvalCases:
    if n <= 0 or len(cases) <= n:
        return cases
    keep = np.sort(np.random.default_rng(seed).choice(len(cases), size=n, replace=False))
    return EvalCases(
        phase=cases.phase,
        users=cases.users[keep],
        exclude=[cases.exclude[i] for i in keep],
        targets=[cases.targets[i] for i in keep],
        skipped=cases.skipped,
    )


def fit(
    split: ProtocolSplit,
    config: FitConfig,
    *,
    text: np.ndarray | None = None,
    drop: np.ndarray | None = None,
) -> FitResult:
    """Train a :class:`TwoTower` on ``split``'s history units; ``drop`` marks held-out items
    (never trained, served from content). Early stopping on validation NDCG@10."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    start = time.perf_counter()
    model = TwoTower(split.n_items, config.tower, text, split.item_attributes, split.n_attributes)
    if config.warm_start_window > 0:
        with torch.no_grad():
            model.items.ids.weight.copy_(
                cooccurrence_embeddings(split, config.tower.dim, config.warm_start_window, drop, config.seed)
            )
        if model.items.text_proj is not None and model.items.replace:
            # Content, which stands in for ids, starts where the warm-started ids are and on
            # their scale, not at random (a fraction of their length).
            known = torch.ones(split.n_items, dtype=torch.bool) if drop is None else torch.from_numpy(~drop)
            model.items.fit_text_projection(known)
    if drop is not None:
        model.items.mask_ids(np.flatnonzero(drop))
    examples = training_examples(split, config, drop)
    if not examples:
        raise ValueError("no training examples: every user's history is empty")
    validation = _subsample(
        eval_cases(split, "validation", exclude_seen=config.exclude_seen), config.val_users, config.seed
    )
    if len(validation) == 0:
        log.warning("no validation case (every validation target already seen): keeping the last epoch")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    best_state, best, best_epoch, history = None, {"ndcg@10": -math.inf}, 0, []
    stopped = "max epochs"
    epoch_s = 0.0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        batches = _batches(examples, config.batch_size, rng)
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not config.progress)
        for batch in bar:
            loss = batch_loss(model, _collate(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        metrics = evaluate_cases(model, split, validation)
        epoch_s = time.perf_counter() - epoch_start
        record = {"epoch": epoch, "loss": total / len(batches), "seconds": epoch_s, **metrics}
        history.append(record)
        improved = metrics["ndcg@10"] > best["ndcg@10"] or len(validation) == 0
        if improved:
            best, best_epoch = metrics, epoch
            best_state = copy.deepcopy(model.state_dict())
        if config.progress:
            tqdm.write(
                f"epoch {epoch}: loss {record['loss']:.4f}  val HR@10 {metrics['hr@10']:.4f} "
                f"NDCG@10 {metrics['ndcg@10']:.4f}  {epoch_s:.1f}s{'  *' if improved else ''}",
                file=sys.stderr,
            )
        if epoch - best_epoch >= config.patience:
            stopped = f"no validation gain for {config.patience} epochs"
            break
        elapsed = time.perf_counter() - start
        if config.time_budget_s is not None and elapsed + epoch_s > config.time_budget_s:
            stopped = f"time budget {config.time_budget_s:.0f}s"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        model=model,
        epochs=len(history),
        best_epoch=best_epoch,
        best_validation=best,
        history=history,
        train_s=time.perf_counter() - start,
        stopped=stopped,
    )
