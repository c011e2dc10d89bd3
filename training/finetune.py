"""The refit behind `streamrec train`: fine-tune the serving text encoder on logged events and
publish it as a new, versioned ONNX encoder folder that workers can hot-swap to.

Steps (DESIGN §1 item 6):

1. Read the log: the Online Retail file (``training.datasets``) or a topic dump, two JSON-lines
   files of our own ``Event`` and ``Item`` messages (bad lines are skipped and counted).
2. Build (earlier item -> next item) pairs per user: items of one *unit* (an invoice, a checkout
   basket, or events at the same instant) are never paired with each other, and the target
   always comes strictly later than the source. The last ``validation_fraction`` of the time
   window holds the validation pairs (by target time).
3. Fine-tune with InfoNCE over in-batch negatives, the same mean pooling and L2 normalisation
   the exported graph has, within a time budget.
4. Rank the whole catalog for every validation pair before and after (HR@10, NDCG@10, MRR of
   the target, the source item excluded) and refuse to publish a model that is worse than its
   base on NDCG@10 unless forced.
5. Export with ``inference.export.export_onnx`` into ``<models_root>/versions/<version>/``, keep
   the Hugging Face folder in its ``hf/`` so the next refit can start from it, extend the
   manifest, and append the version to ``<models_root>/registry.json``.

torch and transformers are imported inside the functions that need them, so the CLI can import
``add_arguments`` cheaply. Nothing here touches Kafka: the caller announces a published version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from inference.catalog import item_text
from inference.encoder import MANIFEST_FILE, load_tokenizer, pad_batch
from inference.file_lock import exclusive_lock
from inference.quantize import PRECISIONS
from inference.schemas import Event, EventType, Item
from training.datasets import RetailLog

log = logging.getLogger("streamrec.training.finetune")

FORMATS = ("online-retail", "dump")
DEVICES = ("auto", "cpu", "cuda")
SHIPPED = "shipped"
VERSIONS_DIR = "versions"
HF_DIR = "hf"
REGISTRY_FILE = "registry.json"
TOKENIZER_FILE = "tokenizer.json"
METRIC_NAMES = ("hr@10", "ndcg@10", "mrr")
DECIDING_METRIC = "ndcg@10"
# Serving embeds with the exported limit (export_onnx's default), so evaluation does too;
# training uses a short limit because item titles are short.
EVAL_MAX_LENGTH = 256
# What the user did next is the label; a purchase says more about intent than a view.
EVENT_WEIGHTS: dict[EventType, float] = {
    EventType.purchase: 1.0,
    EventType.add_to_cart: 0.75,
    EventType.click: 0.5,
    EventType.view: 0.25,
}
_EPOCH = pd.Timestamp(0, tz="UTC")
_MAX_BAD_LINE_EXAMPLES = 5


class NotEnoughData(ValueError):
    """The log yields too few training or validation pairs to fine-tune on."""


class RegistryCorrupt(ValueError):
    """registry.json exists but is not the list this module writes; it is never overwritten."""


# --------------------------------------------------------------------------------------------
# Reading the log


@dataclass(frozen=True)
class InteractionLog:
    """Item interactions with the catalog they refer to.

    ``item_ids[i]`` / ``item_texts[i]``: catalog item ``i`` and the text the worker embeds for it
    (``inference.catalog.item_text``). ``events``: user_id, item (catalog index), basket (events
    with the same user and basket form one unit), ts (UTC), weight, sorted by ts.
    ``counts``: what was read, skipped and why.
    """

    item_ids: list[str]
    item_texts: list[str]
    events: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)


_EVENT_COLUMNS = ("user_id", "item", "basket", "ts", "weight")


def _event_frame(rows: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(_EVENT_COLUMNS))
    frame = frame.astype({"user_id": str, "item": np.int64, "basket": str, "weight": np.float64})
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def interactions_from_retail(retail: RetailLog) -> InteractionLog:
    """Online Retail purchases: one unit per invoice, every line a purchase (weight 1)."""
    items = retail.items
    index = {item_id: i for i, item_id in enumerate(items["item_id"])}
    purchases = retail.purchases
    purchases = purchases.reset_index(drop=True)
    events = _event_frame(
        {
            "user_id": purchases["user_id"],
            "item": purchases["item_id"].map(index),
            "basket": "invoice:" + purchases["invoice"].astype(str),
            "ts": purchases["ts"],
            "weight": np.full(len(purchases), EVENT_WEIGHTS[EventType.purchase]),
        }
    )
    return InteractionLog(
        item_ids=list(items["item_id"]),
        item_texts=[item_text(title) for title in items["title"]],
        events=events,
        counts={"events_read": len(purchases), "events_used": len(events)},
    )


def _json_lines(path: Path) -> Iterator[tuple[int, str]]:
    with Path(path).open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        return f"{where}: {first.get('msg', 'invalid')}"
    return str(exc)


def read_topic_dump(events_path: Path, items_path: Path) -> InteractionLog:
    """Parse a dump of `streamrec.events` and `streamrec.items` (one JSON message per line).

    Lines are validated as the worker validates them (``Message.from_wire``); a bad line is
    skipped and counted, never fatal. The catalog is the items topic's final state (last message
    per item id wins, ``deleted`` removes). Events are deduplicated by event_id (at-least-once
    delivery); search, impression and remove_from_cart events and events of items not in the
    catalog carry no usable next-item signal and are skipped and counted.

    A unit is a purchase's session_id (a checkout basket) or, for other events, the instant.
    """
    counts = dict.fromkeys(
        (
            "items_read", "items_bad_lines", "items_deleted", "events_read", "events_bad_lines",
            "events_duplicate", "events_ignored_type", "events_unknown_item", "events_used",
        ),
        0,
    )
    bad: list[str] = []

    def skip(kind: str, path: Path, number: int, exc: Exception) -> None:
        counts[f"{kind}_bad_lines"] += 1
        if len(bad) < _MAX_BAD_LINE_EXAMPLES:
            bad.append(f"{Path(path).name}:{number}: {_short_error(exc)}")

    catalog: dict[str, Item] = {}
    for number, line in _json_lines(items_path):
        counts["items_read"] += 1
        try:
            item = Item.from_wire(line)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            skip("items", items_path, number, exc)
            continue
        if item.deleted:
            counts["items_deleted"] += 1
            catalog.pop(item.item_id, None)
        else:
            catalog[item.item_id] = item
    item_ids = sorted(catalog)
    index = {item_id: i for i, item_id in enumerate(item_ids)}

    seen: set[str] = set()
    rows: dict[str, list[Any]] = {name: [] for name in _EVENT_COLUMNS}
    for number, line in _json_lines(events_path):
        counts["events_read"] += 1
        try:
            event = Event.from_wire(line)
        except ValueError as exc:
            skip("events", events_path, number, exc)
            continue
        if event.event_id in seen:
            counts["events_duplicate"] += 1
            continue
        seen.add(event.event_id)
        weight = EVENT_WEIGHTS.get(event.type)
        if weight is None:
            counts["events_ignored_type"] += 1
            continue
        item = index.get(event.item_id)  # type: ignore[arg-type]  # required for these types
        if item is None:
            counts["events_unknown_item"] += 1
            continue
        ts = pd.Timestamp(event.ts).tz_convert("UTC")
        if event.type is EventType.purchase and event.session_id:
            basket = f"session:{event.session_id}"
        else:
            basket = f"at:{ts.value}"
        rows["user_id"].append(event.user_id)
        rows["item"].append(item)
        rows["basket"].append(basket)
        rows["ts"].append(ts)
        rows["weight"].append(weight)
    counts["events_used"] = len(rows["item"])
    for message in bad:
        log.warning("skipped bad line %s", message)
    if counts["events_bad_lines"] + counts["items_bad_lines"] > len(bad):
        log.warning(
            "skipped %d bad event lines and %d bad item lines in all",
            counts["events_bad_lines"], counts["items_bad_lines"],
        )
    texts = [item_text(catalog[i].title, catalog[i].category, catalog[i].description) for i in item_ids]
    return InteractionLog(item_ids, texts, _event_frame(rows), counts, bad)


def restrict_window(
    interactions: InteractionLog, since: pd.Timestamp | None, until: pd.Timestamp | None
) -> InteractionLog:
    """Keep events with since <= ts < until (either bound may be open). The catalog is kept."""
    events = interactions.events
    keep = np.ones(len(events), dtype=bool)
    if since is not None:
        keep &= (events["ts"] >= since).to_numpy()
    if until is not None:
        keep &= (events["ts"] < until).to_numpy()
    counts = {**interactions.counts, "events_outside_window": int((~keep).sum()),
              "events_used": int(keep.sum())}
    return replace(interactions, events=events[keep].reset_index(drop=True), counts=counts)


# --------------------------------------------------------------------------------------------
# Pairs and the time split


@dataclass(frozen=True)
class PairSet:
    """(source item -> later target item) pairs as catalog indices, with the units' times (ns
    since the epoch) and the target event's weight."""

    source: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    source_ts: np.ndarray
    target_ts: np.ndarray

    def __len__(self) -> int:
        return len(self.source)

    def take(self, mask_or_index: np.ndarray) -> PairSet:
        return PairSet(*(getattr(self, name)[mask_or_index] for name in _PAIR_FIELDS))

    @staticmethod
    def empty() -> PairSet:
        return PairSet(*(np.zeros(0, dtype=np.float32 if n == "weight" else np.int64) for n in _PAIR_FIELDS))


_PAIR_FIELDS = ("source", "target", "weight", "source_ts", "target_ts")


def _epoch_ns(ts: pd.Series) -> np.ndarray:
    return ((ts - _EPOCH) // pd.Timedelta(nanoseconds=1)).to_numpy(dtype=np.int64)


def build_pairs(events: pd.DataFrame, *, max_per_transition: int = 8, seed: int = 0) -> PairSet:
    """Pairs between each user's consecutive units.

    Events of one (user, basket) form a unit at the time of its first event; units of a user at
    the same instant merge (their order is unknown). Each item of a unit is paired with each item
    of the user's next unit, except an item with itself (a repurchase cannot be ranked: the
    source is excluded from its own ranking); a transition with more candidates keeps
    ``max_per_transition`` of them, drawn with ``seed``. The weight is the target's (the largest
    when an item occurs several times in its unit).
    """
    if max_per_transition < 1:
        raise ValueError(f"max_per_transition must be at least 1, not {max_per_transition}")
    if events.empty:
        return PairSet.empty()
    frame = pd.DataFrame(
        {
            "user_id": events["user_id"].to_numpy(),
            "basket": events["basket"].to_numpy(),
            "item": events["item"].to_numpy(dtype=np.int64),
            "weight": events["weight"].to_numpy(dtype=np.float64),
            "ts": _epoch_ns(events["ts"]),
        }
    )
    frame["unit_ts"] = frame.groupby(["user_id", "basket"], sort=False)["ts"].transform("min")
    units = (
        frame.groupby(["user_id", "unit_ts", "item"], sort=True)["weight"].max().reset_index()
    )
    user = units["user_id"].to_numpy()
    unit_ts = units["unit_ts"].to_numpy(dtype=np.int64)
    item = units["item"].to_numpy(dtype=np.int64)
    weight = units["weight"].to_numpy(dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (unit_ts[1:] != unit_ts[:-1])])
    ends = np.r_[starts[1:], len(units)]

    rng = np.random.default_rng(seed)
    parts: list[tuple[np.ndarray, ...]] = []
    for prev in range(len(starts) - 1):
        a0, a1, b0, b1 = starts[prev], ends[prev], starts[prev + 1], ends[prev + 1]
        if user[a0] != user[b0]:
            continue
        src = np.repeat(item[a0:a1], b1 - b0)
        tgt = np.tile(item[b0:b1], a1 - a0)
        tgt_weight = np.tile(weight[b0:b1], a1 - a0)
        keep = np.flatnonzero(src != tgt)
        if len(keep) > max_per_transition:
            keep = np.sort(rng.choice(keep, size=max_per_transition, replace=False))
        if len(keep):
            n = len(keep)
            parts.append(
                (src[keep], tgt[keep], tgt_weight[keep], np.full(n, unit_ts[a0]), np.full(n, unit_ts[b0]))
            )
    if not parts:
        return PairSet.empty()
    source, target, pair_weight, source_ts, target_ts = (np.concatenate(p) for p in zip(*parts))
    return PairSet(source, target, pair_weight.astype(np.float32), source_ts, target_ts)


def validation_cutoff(events: pd.DataFrame, validation_fraction: float) -> pd.Timestamp:
    """The instant after which the last ``validation_fraction`` of the log's time span lies."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, not {validation_fraction}")
    if events.empty:
        raise NotEnoughData("the log has no usable events in the window")
    first, last = events["ts"].min(), events["ts"].max()
    return first + (last - first) * (1 - validation_fraction)


def split_by_time(pairs: PairSet, cutoff: pd.Timestamp) -> tuple[PairSet, PairSet]:
    """(training, validation): validation pairs are those whose target is at or after ``cutoff``;
    a training pair's target (hence also its source) is before it."""
    cutoff_ns = int((cutoff - _EPOCH) // pd.Timedelta(nanoseconds=1))
    late = pairs.target_ts >= cutoff_ns
    return pairs.take(~late), pairs.take(late)


# --------------------------------------------------------------------------------------------
# Evaluation and the publishing rule


def rank_metrics(item_vectors: np.ndarray, source: np.ndarray, target: np.ndarray, k: int = 10) -> dict[str, float]:
    """Mean HR@k, NDCG@k and MRR of ``target`` when all items are ranked by cosine to ``source``'s
    vector (rows of ``item_vectors`` are unit length), the source item itself excluded."""
    import torch

    from training.metrics import hit_at_k, ndcg_at_k, rank_items, reciprocal_rank

    names = (f"hr@{k}", f"ndcg@{k}", "mrr")
    if len(source) == 0:
        return dict.fromkeys(names, 0.0)
    vectors = torch.from_numpy(np.ascontiguousarray(item_vectors, dtype=np.float32))
    ranks: list[np.ndarray] = []
    for lo in range(0, len(source), 1024):
        src, tgt = source[lo : lo + 1024], target[lo : lo + 1024]
        scores = vectors[torch.from_numpy(src)] @ vectors.T
        _, chunk = rank_items(scores, [np.array([s]) for s in src], [np.array([t]) for t in tgt], k=k)
        ranks.extend(chunk)
    return dict(
        zip(
            names,
            (float(hit_at_k(ranks, k).mean()), float(ndcg_at_k(ranks, k).mean()),
             float(reciprocal_rank(ranks).mean())),
        )
    )


NOT_PUBLISHED = "; not published (--force publishes anyway)"


def publish_decision(
    base: dict[str, float], tuned: dict[str, float], n_validation: int, *, force: bool = False
) -> tuple[bool, str]:
    """Publish unless the tuned model is worse than its base on NDCG@10 (or there is nothing to
    compare on); ``force`` publishes anyway and says so."""
    b, t = base[DECIDING_METRIC], tuned[DECIDING_METRIC]
    if n_validation == 0:
        why = "no validation pairs: the tuned model cannot be compared with its base"
    elif t < b:
        why = f"tuned {DECIDING_METRIC} {t:.5f} is worse than the base's {b:.5f}"
    else:
        return True, f"tuned {DECIDING_METRIC} {t:.5f} >= base {b:.5f}"
    if force:
        return True, f"forced: {why}"
    return False, f"{why}{NOT_PUBLISHED}"


# --------------------------------------------------------------------------------------------
# Model: pooling, embedding, training


def _pooled(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Masked mean of the token states, L2-normalised: the pooling the exported graph contains."""
    import torch

    states = model(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
    ).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def _tokenize(tokenizer_path: Path, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    tokenizer, pad_id = load_tokenizer(tokenizer_path, max_length)
    return [encoding.ids for encoding in tokenizer.encode_batch(list(texts))], pad_id


def _batch_tensors(ids: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    input_ids, attention_mask = pad_batch(ids, pad_id)
    return torch.from_numpy(input_ids).to(device), torch.from_numpy(attention_mask).to(device)


def embed_items(
    model: Any, ids: Sequence[Sequence[int]], pad_id: int, device: Any, *, batch_size: int = 128,
    desc: str | None = None,
) -> np.ndarray:
    """Unit-length embeddings of tokenized texts, in order (batched by length, no gradients)."""
    import torch
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    order = np.argsort([len(row) for row in ids], kind="stable")
    out: np.ndarray | None = None
    with torch.inference_mode():
        for lo in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=desc is None):
            rows = order[lo : lo + batch_size]
            vectors = _pooled(model, *_batch_tensors([ids[i] for i in rows], pad_id, device))
            vectors = vectors.float().cpu().numpy()
            if out is None:
                out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def contrastive_loss(
    query: Any, positive: Any, source: Any, target: Any, weight: Any, temperature: float
) -> Any:
    """Weighted InfoNCE of each query against every positive in the batch.

    Another row's positive that is the same item as this row's target, or this row's own source
    item, is no negative: it is masked rather than pushed away.
    """
    import torch

    logits = query @ positive.T / temperature
    n = len(logits)
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    same = (target[None, :] == target[:, None]) | (target[None, :] == source[:, None])
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    labels = torch.arange(n, device=logits.device)
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


@dataclass(frozen=True)
class TrainStats:
    steps: int
    seconds: float
    last_loss: float | None
    epochs: float


def fine_tune(
    model: Any,
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    pairs: PairSet,
    *,
    device: Any,
    batch_size: int = 64,
    lr: float = 2e-5,
    temperature: float = 0.05,
    time_budget_s: float = 300.0,
    max_steps: int | None = None,
    seed: int = 0,
) -> TrainStats:
    """AdamW over shuffled batches of ``pairs`` until ``max_steps`` or ``time_budget_s`` (the
    step under way when the budget runs out is finished). Reshuffles each epoch."""
    import torch
    from tqdm.auto import tqdm

    if len(pairs) < 2:
        raise NotEnoughData(f"{len(pairs)} training pair(s); in-batch negatives need at least 2")
    batch_size = min(batch_size, len(pairs))
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, min(10, (max_steps or 100) // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    model.train()
    order, cursor, steps, loss_value = rng.permutation(len(pairs)), 0, 0, None
    start = time.monotonic()
    with tqdm(total=max_steps, desc="fine-tuning", unit="step", leave=False) as bar:
        while (max_steps is None or steps < max_steps) and time.monotonic() - start < time_budget_s:
            if cursor + batch_size > len(order):
                order, cursor = rng.permutation(len(pairs)), 0
            rows = order[cursor : cursor + batch_size]
            cursor += batch_size
            src, tgt = pairs.source[rows], pairs.target[rows]
            query = _pooled(model, *_batch_tensors([token_ids[i] for i in src], pad_id, device))
            positive = _pooled(model, *_batch_tensors([token_ids[i] for i in tgt], pad_id, device))
            loss = contrastive_loss(
                query, positive, torch.from_numpy(src).to(device), torch.from_numpy(tgt).to(device),
                torch.from_numpy(pairs.weight[rows]).to(device), temperature,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            steps += 1
            loss_value = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval()
    seconds = time.monotonic() - start
    return TrainStats(steps, seconds, loss_value, steps * batch_size / len(pairs))


# --------------------------------------------------------------------------------------------
# Versions and the registry


def weights_digest(model_dir: Path) -> str:
    """sha256 over the weight files of a model folder."""
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no *.safetensors or pytorch_model*.bin weights")
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def version_name(created: datetime, digest: str) -> str:
    return f"ft-{created.astimezone(timezone.utc):%Y%m%d%H%M%S}-{digest[:8]}"


def _rfc3339(value: datetime | pd.Timestamp) -> str:
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_registry(models_root: Path) -> list[dict[str, Any]]:
    """The published versions, oldest first ([] when none); ``path`` is relative to models_root."""
    path = Path(models_root) / REGISTRY_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RegistryCorrupt(f"{path} is not valid JSON ({exc}); repair or move it, it is never overwritten") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "version" in e for e in entries):
        raise RegistryCorrupt(f"{path} is not a list of version entries; repair or move it")
    return entries


def append_registry(models_root: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``entry`` under a lock, writing a temporary file and renaming it over the registry."""
    models_root = Path(models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(models_root / f".{REGISTRY_FILE}.lock"):
        entries = [*read_registry(models_root), entry]
        tmp = models_root / f".{REGISTRY_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            tmp.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, models_root / REGISTRY_FILE)
        finally:
            tmp.unlink(missing_ok=True)
    return entries


def resolve_base(base: str | Path | None, models_root: Path) -> tuple[Path, str]:
    """The Hugging Face folder to start from and the version it serves as.

    ``base``: a model folder, a published version folder (its ``hf/`` is used), or "shipped".
    Unset: the latest published version in the registry (what workers were last told to serve),
    else the configured encoder (STREAMREC_ENCODER_ONNX_DIR's ``hf/``, STREAMREC_ENCODER_MODEL_DIR),
    else the shipped all-MiniLM-L6-v2.
    """
    from inference.export import default_model_dir, source_version
    from inference.settings import InferenceSettings

    def from_folder(folder: Path) -> tuple[Path, str] | None:
        if (folder / HF_DIR / "config.json").is_file() and (folder / MANIFEST_FILE).is_file():
            return folder / HF_DIR, str(json.loads((folder / MANIFEST_FILE).read_text())["version"])
        if (folder / "config.json").is_file():
            parent_manifest = folder.parent / MANIFEST_FILE
            if folder.name == HF_DIR and parent_manifest.is_file():
                return folder, str(json.loads(parent_manifest.read_text())["version"])
            return folder, source_version(folder)
        return None

    if base is not None and str(base) != SHIPPED:
        found = from_folder(Path(base))
        if found is None:
            raise FileNotFoundError(
                f"--base {base} is neither a model folder (config.json, weights, tokenizer.json) nor a "
                f"published version folder (manifest.json and {HF_DIR}/)"
            )
        return found
    if base is None:
        for entry in reversed(read_registry(models_root)):
            found = from_folder(Path(models_root) / entry["path"])
            if found is not None:
                return found
            log.warning("registered version %s has no %s/ folder under %s; skipped as a base",
                        entry["version"], HF_DIR, models_root)
        settings = InferenceSettings()
        served = settings.encoder_onnx_dir
        if served is not None and (found := from_folder(served)) is not None and found[0].name == HF_DIR:
            return found
        if settings.encoder_model_dir is not None:
            return settings.encoder_model_dir, source_version(settings.encoder_model_dir)
    shipped = default_model_dir()
    return shipped, source_version(shipped)


# --------------------------------------------------------------------------------------------
# The whole refit


@dataclass(frozen=True)
class FinetuneOptions:
    """Everything `streamrec train` takes; the defaults are the documented ones."""

    format: str = "online-retail"
    path: Path | None = None
    events: Path | None = None
    items: Path | None = None
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    base: str | Path | None = None
    models_root: Path | None = None
    time_budget: float = 300.0
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 2e-5
    temperature: float = 0.05
    max_length: int = 32
    validation_fraction: float = 0.1
    max_pairs_per_transition: int = 8
    max_validation: int = 20_000
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    force: bool = False
    precision: str | None = None  # None: STREAMREC_ENCODER_PRECISION
    tower: bool = False
    tower_time_budget: float = 900.0


@dataclass(frozen=True)
class TrainResult:
    """``path`` is the published version folder (None when not published); ``manifest`` is what
    was (or would have been) written, metrics included."""

    version: str
    path: Path | None
    manifest: dict[str, Any]
    published: bool
    reason: str
    total_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": None if self.path is None else str(self.path)}


def load_interactions(options: FinetuneOptions) -> tuple[InteractionLog, dict[str, Any]]:
    """The log named by ``options`` restricted to its window, and a description of the source."""
    if options.format == "dump":
        if options.events is None or options.items is None:
            raise ValueError("--format dump needs --events FILE and --items FILE (JSON lines)")
        interactions = read_topic_dump(options.events, options.items)
        source = {"format": "dump", "events": str(options.events), "items": str(options.items)}
    elif options.format == "online-retail":
        from training.datasets import default_online_retail_path, load_online_retail

        path = options.path or default_online_retail_path()
        interactions = interactions_from_retail(load_online_retail(path))
        source = {"format": "online-retail", "path": str(path)}
    else:
        raise ValueError(f"format must be one of {FORMATS}, not {options.format!r}")
    return restrict_window(interactions, options.since, options.until), source


def _device(name: str) -> Any:
    import torch

    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _publish_version(
    hf_tmp: Path, versions_dir: Path, version: str, manifest_extra: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Export ``hf_tmp`` to ONNX and move export + ``hf/`` + manifest into ``versions/<version>``
    with one rename, so a reader never sees a half-written version."""
    from inference.export import export_onnx

    final = versions_dir / version
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are never overwritten")
    versions_dir.mkdir(parents=True, exist_ok=True)
    staging = versions_dir / f".{version}.staging-{uuid.uuid4().hex[:8]}"
    try:
        export_onnx(hf_tmp, staging)
        shutil.copytree(hf_tmp, staging / HF_DIR)
        manifest = json.loads((staging / MANIFEST_FILE).read_text())
        manifest.update(manifest_extra)
        manifest["source_model_dir"] = str((final / HF_DIR).resolve())
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final, manifest


def train_version(options: FinetuneOptions) -> TrainResult:
    """Fine-tune, evaluate before and after, and publish a new encoder version (see the module doc)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    from inference.settings import InferenceSettings

    started = time.monotonic()
    settings = InferenceSettings()
    models_root = Path(options.models_root or settings.data_dir / "models")
    precision = options.precision or settings.encoder_precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    threads = options.threads or _available_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(options.seed)
    device = _device(options.device)

    interactions, source = load_interactions(options)
    events = interactions.events
    cutoff = validation_cutoff(events, options.validation_fraction)
    pairs = build_pairs(events, max_per_transition=options.max_pairs_per_transition, seed=options.seed)
    train_pairs, validation = split_by_time(pairs, cutoff)
    if len(validation) > options.max_validation:
        rng = np.random.default_rng(options.seed)
        validation = validation.take(np.sort(rng.choice(len(validation), options.max_validation, replace=False)))
    log.info(
        "%d events, %d items: %d training pairs, %d validation pairs (targets from %s)",
        len(events), len(interactions.item_ids), len(train_pairs), len(validation), _rfc3339(cutoff),
    )
    if len(train_pairs) < 2:
        raise NotEnoughData(
            f"{len(train_pairs)} training pair(s) before {_rfc3339(cutoff)}: the log needs users with "
            "at least two units (invoices, baskets or instants) before the validation window"
        )

    base_dir, base_version = resolve_base(options.base, models_root)
    model = AutoModel.from_pretrained(base_dir, dtype=torch.float32).to(device)
    tokenizer_path = base_dir / TOKENIZER_FILE
    train_ids, pad_id = _tokenize(tokenizer_path, interactions.item_texts, options.max_length)
    eval_length = min(EVAL_MAX_LENGTH, int(model.config.max_position_embeddings))
    eval_ids, _ = _tokenize(tokenizer_path, interactions.item_texts, eval_length)

    base_vectors = embed_items(model, eval_ids, pad_id, device, desc="embedding catalog (base)")
    base_metrics = rank_metrics(base_vectors, validation.source, validation.target)
    stats = fine_tune(
        model, train_ids, pad_id, train_pairs, device=device, batch_size=options.batch_size, lr=options.lr,
        temperature=options.temperature, time_budget_s=options.time_budget, max_steps=options.max_steps,
        seed=options.seed,
    )
    tuned_vectors = embed_items(model, eval_ids, pad_id, device, desc="embedding catalog (tuned)")
    tuned_metrics = rank_metrics(tuned_vectors, validation.source, validation.target)
    published, reason = publish_decision(base_metrics, tuned_metrics, len(validation), force=options.force)
    encoder_weights = "tuned"
    if not published and options.tower:
        # The event encoder is the bigger gain: it is published beside the base text encoder's weights.
        model = AutoModel.from_pretrained(base_dir, dtype=torch.float32)
        published, encoder_weights = True, "base"
        reason = (f"the text encoder's refit is not kept ({reason.removesuffix(NOT_PUBLISHED)}): the version pairs the "
                  "base encoder's weights with the new event encoder")

    with tempfile.TemporaryDirectory(prefix="streamrec-finetune-") as tmp:
        hf_tmp = Path(tmp) / HF_DIR
        model.to("cpu").save_pretrained(hf_tmp)
        shutil.copyfile(tokenizer_path, hf_tmp / TOKENIZER_FILE)
        created = datetime.now(timezone.utc)
        version = version_name(created, weights_digest(hf_tmp))
        manifest: dict[str, Any] = {
            "version": version,
            "base_version": base_version,
            "base_model_dir": str(Path(base_dir).resolve()),
            "dim": int(base_vectors.shape[1]),
            "tokenizer": TOKENIZER_FILE,
            "metrics": {"base": base_metrics, "tuned": tuned_metrics, "n_validation": len(validation)},
            "data_window": {
                "from": _rfc3339(events["ts"].min()),
                "to": _rfc3339(events["ts"].max()),
                "validation_from": _rfc3339(cutoff),
            },
            "data": {**source, **interactions.counts, "n_items": len(interactions.item_ids)},
            "n_events": len(events),
            "n_pairs": len(train_pairs),
            "train_s": round(stats.seconds, 2),
            "steps": stats.steps,
            "epochs": round(stats.epochs, 4),
            "last_loss": stats.last_loss,
            "device": device.type,
            "threads": threads,
            "training": {
                "batch_size": options.batch_size, "lr": options.lr, "temperature": options.temperature,
                "max_length": options.max_length, "time_budget_s": options.time_budget,
                "max_steps": options.max_steps, "validation_fraction": options.validation_fraction,
                "max_pairs_per_transition": options.max_pairs_per_transition, "seed": options.seed,
                "event_weights": {t.value: w for t, w in EVENT_WEIGHTS.items()},
            },
            "published": published,
            "decision": reason,
            "encoder_weights": encoder_weights,
            "created_at": _rfc3339(created),
        }
        if not published:
            log.warning("version %s not published: %s", version, reason)
            return TrainResult(version, None, manifest, False, reason, round(time.monotonic() - started, 2))
        path, manifest = _publish_version(hf_tmp, models_root / VERSIONS_DIR, version, manifest)
    if options.tower:
        from training.tower_refit import refit_tower

        manifest["tower"] = refit_tower(interactions, path, time_budget_s=options.tower_time_budget, seed=options.seed,
                                        progress=True)
        (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    entry = {
        "version": version,
        "path": f"{VERSIONS_DIR}/{version}",
        "created_at": manifest["created_at"],
        "base_version": base_version,
        "metrics": manifest["metrics"],
    }
    if precision == "int8":
        path, manifest = _publish_int8(path, interactions.item_texts, validation, eval_length, threads)
        entry["variants"] = {"int8": f"{VERSIONS_DIR}/{path.name}"}
        version = str(manifest["version"])
    append_registry(models_root, entry)
    return TrainResult(version, path, manifest, True, reason, round(time.monotonic() - started, 2))


def _publish_int8(
    fp32_dir: Path, item_texts: Sequence[str], validation: PairSet, eval_length: int, threads: int
) -> tuple[Path, dict[str, Any]]:
    """Quantize a published version into ``versions/<version>-int8`` (the version to announce),
    with its own validation metrics beside the fp32 ones, measured the same way."""
    from inference.encoder import TextEncoder
    from inference.quantize import INT8_SUFFIX, quantize_int8

    int8_dir = quantize_int8(fp32_dir, fp32_dir.with_name(fp32_dir.name + INT8_SUFFIX))
    vectors = TextEncoder(int8_dir, device="cpu", max_length=eval_length, threads=threads).encode(item_texts)
    manifest = json.loads((int8_dir / MANIFEST_FILE).read_text())
    manifest["metrics"] = {**manifest["metrics"], "int8": rank_metrics(vectors, validation.source, validation.target)}
    (int8_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return int8_dir, manifest


# --------------------------------------------------------------------------------------------
# Command line


def _timestamp(value: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date or RFC 3339 time: {value!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `streamrec train`."""
    p.add_argument("--format", choices=FORMATS, default="online-retail",
                   help="online-retail: the UCI file; dump: --events/--items JSON-lines topic dumps")
    p.add_argument("--path", type=Path, default=None,
                   help="Online Retail .parquet/.csv(.gz) (default: the shared Online Retail file)")
    p.add_argument("--events", type=Path, default=None, help="events.jsonl: Event messages, one a line")
    p.add_argument("--items", type=Path, default=None, help="items.jsonl: Item messages, one a line")
    p.add_argument("--since", type=_timestamp, default=None, help="use events at or after this time (UTC unless given)")
    p.add_argument("--until", type=_timestamp, default=None, help="use events before this time (UTC unless given)")
    p.add_argument("--base", default=None,
                   help="model folder or published version folder to start from, or 'shipped' "
                        "(default: the latest published version, else the configured/shipped encoder)")
    p.add_argument("--models-root", type=Path, default=None,
                   help="where versions/ and registry.json live (default: $STREAMREC_DATA_DIR/models)")
    p.add_argument("--time-budget", type=float, default=300.0, help="seconds of training steps (default: 300)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps (default: the budget decides)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per step; the rest of the batch are negatives")
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate")
    p.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature")
    p.add_argument("--max-length", type=int, default=32, help="tokens per text while training")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="last share of the time window whose pairs are held out (default: 0.1)")
    p.add_argument("--max-pairs-per-transition", type=int, default=8,
                   help="pairs drawn between two consecutive units of a user (default: 8)")
    p.add_argument("--max-validation", type=int, default=20_000, help="validation pairs ranked at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when torch sees it")
    p.add_argument("--force", action="store_true", help="publish even if worse than the base on NDCG@10")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="int8: also write <version>-int8 (checked against fp32, with its own metrics) and make "
                        "it the version to announce (default: STREAMREC_ENCODER_PRECISION, else fp32)")
    p.add_argument("--tower", action="store_true",
                   help="also fit the event encoder (two towers) on the same log with the new text encoder, and "
                        "export it into the version's tower/ folder: workers then retrieve by a user vector computed "
                        "from each user's recent items (STREAMREC_EVENT_ENCODER)")
    p.add_argument("--tower-time-budget", type=float, default=900.0,
                   help="seconds for the event encoder's epochs (default: 900; early stopping usually ends sooner)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def options_from_args(args: argparse.Namespace) -> FinetuneOptions:
    names = {f for f in FinetuneOptions.__dataclass_fields__}
    return FinetuneOptions(**{k: v for k, v in vars(args).items() if k in names})


def format_result(result: TrainResult) -> str:
    m = result.manifest
    metrics = m["metrics"]
    lines = [
        f"{'':8}" + "".join(f"{name:>10}" for name in METRIC_NAMES),
        *(f"{label:8}" + "".join(f"{metrics[label][name]:>10.4f}" for name in METRIC_NAMES)
          for label in ("base", "tuned", "int8") if label in metrics),
        (f"validation pairs {metrics['n_validation']} (targets from {m['data_window']['validation_from']}), "
         f"training pairs {m['n_pairs']}, events {m['n_events']} ({m['data_window']['from']} .. "
         f"{m['data_window']['to']})"),
        (f"{m['steps']} steps in {m['train_s']:.0f}s on {m['device']} ({m['epochs']:.3f} epochs), "
         f"base {m['base_version']}, total {result.total_s:.0f}s"),
        f"{'published' if result.published else 'NOT published'} {result.version}: {result.reason}",
    ]
    if "tower" in m:
        tower = m["tower"]["metrics"]
        lines.append(f"event encoder: {m['tower']['epochs']} epochs in {m['tower']['train_s']:.0f}s, validation "
                     f"NDCG@10 {tower['validation']['ndcg@10']:.4f}, test HR@10 {tower['test']['hr@10']:.4f} "
                     f"NDCG@10 {tower['test']['ndcg@10']:.4f} ({m['tower']['trained_on']['users']} users)")
    if result.path is not None:
        lines.append(f"folder: {result.path}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> TrainResult:
    """Run `streamrec train` from parsed arguments, print the result, and return it.

    Raises FileNotFoundError or ValueError (NotEnoughData and RegistryCorrupt included) on unusable
    input; the caller maps them to an exit status.
    """
    result = train_version(options_from_args(args))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_result(result))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m training.finetune``: 0 published, 1 not published, 2 unusable input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="streamrec train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, ValueError) as exc:  # NotEnoughData and RegistryCorrupt included
        print(f"streamrec train: {exc}", file=sys.stderr)
        return 2
    return 0 if result.published else 1


if __name__ == "__main__":
    sys.exit(main())
