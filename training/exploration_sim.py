"""`streamrec explore-sim`: does the exploration bandit find users' new interests sooner than pure
exploitation, and what does it cost in accuracy? An offline replay of the Online Retail log.

The world: every item's title is embedded with the shipped encoder, and k-means over the item
vectors gives the topics (the bandit's arms). Customers with at least `min_invoices` invoices are
replayed basket by basket, all users interleaved in time order, so the global arms learn across
users as they would live. Before each basket t >= 1 a policy shows k items:

- exploitation: the items most similar (cosine) to the user's profile, a time-decayed
  purchase-weighted mean of the vectors of everything bought before (inference.profiles.fold),
  never an item bought before;
- exploration: `explore_count(k, rate)` of the tail slots are replaced, one per chosen topic, by
  that topic's item closest to the profile. Candidate topics are those the user never bought
  from. `random` picks them uniformly, `thompson` with `choose_topics` over the global and the
  user's personal arms (inference.exploration).

Feedback, as the live worker would record it: an explored item counts a show at once, and a
reward (once per slot) if the user buys any item of its topic within the next `horizon` baskets
(the basket right after the list included), both added to the global and the user's arms with
`add_observation`.

Measures, per policy, on the same users and steps:

- new interests: the topics of basket t the user never bought from before; one counts as
  discovered when some shown item (explored or exploited) at a step <= t was of that topic;
  `ahead` is the share of new interests shown at least one basket before their first purchase,
  `steps ahead` how many baskets before it a discovered topic was first shown (mean);
- accuracy: HR@10 and NDCG@10 of the shown list against basket t's items not bought before
  (DESIGN §4 basket protocol, already-bought items excluded from ranking and targets; a step
  whose basket holds only repurchases is not scored).

A replay cannot tell whether showing a topic caused the purchase; it says whether the policy put
the interest in front of the user before (or when) it appeared, and at what accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.clustering import cluster_name, kmeans, unit_rows
from inference.exploration import MAX_PERSONAL_TOPICS, Arm, add_observation, choose_topics, explore_count
from inference.profiles import EVENT_WEIGHTS, Interest, fold
from inference.schemas import EventType

POLICIES = ("exploit", "random", "thompson")
DEFAULT_RATES = (0.1, 0.2)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_NDCG_BUDGET_PCT = 10.0


@dataclass(frozen=True)
class SimConfig:
    k: int = 10
    horizon: int = 3
    """Baskets (from the one right after the list) in which a topic purchase rewards an explored slot."""
    half_life_s: float = 30 * 86_400.0
    prior_strength: float = 20.0


@dataclass(frozen=True)
class Policy:
    name: str  # one of POLICIES
    rate: float
    seed: int = 0

    @property
    def label(self) -> str:
        return "exploit" if self.name == "exploit" else f"{self.name}@{self.rate:g}"


@dataclass(frozen=True)
class Basket:
    ts: float  # epoch seconds
    items: np.ndarray  # item indices, unique


@dataclass
class PolicyStats:
    """Running sums of one policy run; `summary()` turns them into rates and means."""

    new_interests: int = 0
    discovered: int = 0
    discovered_ahead: int = 0
    steps_ahead: int = 0
    scored_steps: int = 0
    ndcg: float = 0.0
    hits: int = 0
    steps: int = 0
    explored: int = 0
    rewarded: int = 0
    explored_topics: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, float]:
        return {
            "discovery": self.discovered / self.new_interests if self.new_interests else 0.0,
            "discovery_ahead": self.discovered_ahead / self.new_interests if self.new_interests else 0.0,
            "steps_ahead": self.steps_ahead / self.discovered if self.discovered else 0.0,
            "ndcg@10": self.ndcg / self.scored_steps if self.scored_steps else 0.0,
            "hr@10": self.hits / self.scored_steps if self.scored_steps else 0.0,
            "explored_per_step": self.explored / self.steps if self.steps else 0.0,
            "explore_reward_rate": self.rewarded / self.explored if self.explored else 0.0,
        }


# --------------------------------------------------------------------------------------------
# The world: item vectors, topics, baskets


def item_vectors(titles: Sequence[str], *, data_dir: Path | None = None, progress: bool = True) -> np.ndarray:
    """Unit vectors of the items' texts from the shipped encoder, cached under
    `<data_dir>/cache/` by a hash of the texts and the model version (the first call exports the
    model, a minute or two; encoding ~4k titles takes about half a minute on 2 cores)."""
    from inference.catalog import item_text
    from inference.encoder import TextEncoder, read_manifest
    from inference.recommender import encoder_dir
    from inference.settings import InferenceSettings

    settings = InferenceSettings() if data_dir is None else InferenceSettings(data_dir=data_dir)
    if progress:
        print("explore-sim: preparing the encoder (the first run exports it)...", file=sys.stderr)
    onnx_dir = encoder_dir(settings)
    version = str(read_manifest(onnx_dir)["version"])
    texts = [item_text(t) for t in titles]
    digest = hashlib.sha256("\n".join([version, *texts]).encode()).hexdigest()[:20]
    path = settings.data_dir / "cache" / f"item_vectors-{digest}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    if progress:
        print(f"explore-sim: embedding {len(texts)} item titles...", file=sys.stderr)
    encoder = TextEncoder(onnx_dir, device="cpu", threads=settings.encoder_threads)
    vectors = encoder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def topics(vectors: np.ndarray, titles: Sequence[str], n_topics: int, *, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Each item's topic (spherical k-means) and a readable name per topic."""
    centroids, labels = kmeans(vectors, n_topics, seed=seed)
    unit = unit_rows(vectors)
    names = [cluster_name(c, unit, titles) for c in centroids]
    return labels.astype(np.int64), names


def _epoch_seconds(ts) -> np.ndarray:
    """A pandas timestamp column (tz-aware or naive UTC, any unit) or numeric seconds as float seconds."""
    import pandas as pd

    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert(None)
    if pd.api.types.is_datetime64_any_dtype(ts.dtype):
        return ts.to_numpy().astype("datetime64[ms]").astype(np.int64) / 1000.0
    return ts.to_numpy(dtype=np.float64)


def retail_user_baskets(log, item_index: dict[str, int], *, min_invoices: int = 4) -> dict[str, list[Basket]]:
    """Baskets (one per invoice, items deduplicated) of the customers with at least
    `min_invoices` invoices, in time order; an invoice's time is that of its first line."""
    p = log.purchases
    ts = _epoch_seconds(p["ts"])
    users = p["user_id"].to_numpy(dtype=object)
    invoices = p["invoice"].to_numpy(dtype=object)
    items = p["item_id"].to_numpy(dtype=object)
    per_user: dict[str, dict[str, tuple[float, list[int]]]] = {}
    for user, invoice, item, t in zip(users, invoices, items, ts):
        index = item_index.get(item)
        if index is None:
            continue
        entry = per_user.setdefault(user, {}).setdefault(invoice, (float(t), []))
        if index not in entry[1]:
            entry[1].append(index)
    out: dict[str, list[Basket]] = {}
    for user in sorted(per_user):
        invoices_of = per_user[user]
        if len(invoices_of) < min_invoices:
            continue
        # dicts keep insertion order = file order (sorted by time); a stable sort keeps ties in it
        ordered = sorted(invoices_of.values(), key=lambda e: e[0])
        out[user] = [Basket(t, np.asarray(i, dtype=np.int64)) for t, i in ordered]
    return out


# --------------------------------------------------------------------------------------------
# Metrics


def basket_ndcg(shown: Sequence[int], targets: set[int], k: int = 10) -> tuple[float, int]:
    """(NDCG@k, HR@k) of a shown list against a basket: any target in the top k is a hit; NDCG
    sums the gains of all targets in the top k over the ideal of min(|targets|, k) hits."""
    if not targets:
        raise ValueError("a basket with no target items cannot be scored")
    dcg = sum(1.0 / np.log2(i + 2) for i, item in enumerate(shown[:k]) if item in targets)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(targets), k)))
    return dcg / ideal, int(dcg > 0)


# --------------------------------------------------------------------------------------------
# The replay


@dataclass
class _UserState:
    interest: Interest | None = None
    bought: set[int] = field(default_factory=set)
    bought_topics: set[int] = field(default_factory=set)


@dataclass
class _RunState:
    """One policy run's mutable state: its rng, arms, pending slots and what it has shown."""

    policy: Policy
    rng: np.random.Generator
    global_arms: dict[str, Arm] = field(default_factory=dict)
    personal: dict[str, dict[str, Arm]] = field(default_factory=dict)
    pending: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # user -> [(topic, step)]
    first_shown: dict[str, dict[int, int]] = field(default_factory=dict)  # user -> topic -> step
    stats: PolicyStats = field(default_factory=PolicyStats)


def _top_k(scores: np.ndarray, k: int) -> list[int]:
    """The k best indices by score descending, ties by index ascending (finite scores only)."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    kth = scores[part].min()
    pool = np.flatnonzero(scores >= kth)  # ascending index, so a stable sort breaks ties by index
    order = pool[np.argsort(-scores[pool], kind="stable")]
    return order[:k].tolist()


def _explore(
    run: _RunState,
    user: str,
    candidates: list[int],
    k: int,
    config: SimConfig,
) -> list[int]:
    """The topics this policy explores for this user at this step."""
    policy = run.policy
    if policy.name == "exploit" or policy.rate <= 0 or not candidates:
        return []
    n = min(explore_count(k, policy.rate, run.rng), len(candidates))
    if n == 0:
        return []
    if policy.name == "random":
        return [candidates[i] for i in run.rng.choice(len(candidates), size=n, replace=False)]
    if policy.name == "thompson":
        chosen = choose_topics(
            [str(c) for c in candidates], run.global_arms, run.personal.get(user, {}), n, run.rng,
            prior_strength=config.prior_strength,
        )
        return [int(c) for c in chosen]
    raise ValueError(f"unknown policy {policy.name!r}; choose among {POLICIES}")


def simulate(
    vectors: np.ndarray,
    item_topics: np.ndarray,
    baskets: dict[str, list[Basket]],
    policies: Sequence[Policy],
    config: SimConfig = SimConfig(),
) -> list[PolicyStats]:
    """Replay every user's baskets in global time order under each policy; one stats per policy.

    All policies see the same users and steps; exploitation's ranking depends only on the log,
    so it is computed once per step and shared.
    """
    vectors = unit_rows(np.asarray(vectors, dtype=np.float32))
    item_topics = np.asarray(item_topics, dtype=np.int64)
    if len(item_topics) != len(vectors):
        raise ValueError(f"{len(vectors)} item vectors but {len(item_topics)} topic labels")
    n_topics = int(item_topics.max()) + 1 if len(item_topics) else 0
    members = [np.flatnonzero(item_topics == t) for t in range(n_topics)]
    weight = EVENT_WEIGHTS[EventType.purchase]
    k = config.k

    runs = [_RunState(p, np.random.default_rng(p.seed)) for p in policies]
    users = {u: _UserState() for u in baskets}
    timeline = sorted((b.ts, u, t) for u, bs in baskets.items() for t, b in enumerate(bs))

    for _, user, t in timeline:
        state = users[user]
        basket = baskets[user][t]
        basket_topics = {int(x) for x in item_topics[basket.items]}
        if t > 0 and state.interest is not None and (direction := state.interest.direction()) is not None:
            scores = vectors @ direction
            if state.bought:
                scores[list(state.bought)] = -np.inf
            exploit = _top_k(scores, k)
            candidates = [c for c in range(n_topics) if c not in state.bought_topics]
            new_topics = basket_topics - state.bought_topics
            targets = set(basket.items.tolist()) - state.bought
            for run in runs:
                chosen = _explore(run, user, candidates, k, config)
                shown = exploit[: k - len(chosen)]
                explored: list[tuple[int, int]] = []
                for topic in chosen:
                    pool = members[topic]
                    order = pool[np.argsort(-scores[pool], kind="stable")]
                    item = next((int(i) for i in order if int(i) not in shown), None)
                    if item is None:
                        continue
                    shown.append(item)
                    explored.append((topic, item))
                first = run.first_shown.setdefault(user, {})
                for item in shown:
                    first.setdefault(int(item_topics[item]), t)
                personal = run.personal.get(user, {})
                for topic, _ in explored:
                    run.global_arms = add_observation(run.global_arms, str(topic), 1, 0)
                    personal = add_observation(personal, str(topic), 1, 0, limit=MAX_PERSONAL_TOPICS)
                    run.pending.setdefault(user, []).append((topic, t))
                    run.stats.explored_topics[topic] += 1
                run.personal[user] = personal
                s = run.stats
                s.steps += 1
                s.explored += len(explored)
                if targets:
                    ndcg, hit = basket_ndcg(shown, targets, k)
                    s.ndcg += ndcg
                    s.hits += hit
                    s.scored_steps += 1
                for topic in new_topics:
                    s.new_interests += 1
                    if topic in first:
                        s.discovered += 1
                        s.steps_ahead += t - first[topic]
                        s.discovered_ahead += first[topic] < t
        # basket t arrives: rewards for slots shown at steps t-horizon+1 .. t
        for run in runs:
            slots = run.pending.get(user)
            if not slots:
                continue
            keep = []
            personal = run.personal.get(user, {})
            for topic, step in slots:
                if topic in basket_topics:
                    run.global_arms = add_observation(run.global_arms, str(topic), 0, 1)
                    personal = add_observation(personal, str(topic), 0, 1, limit=MAX_PERSONAL_TOPICS)
                    run.stats.rewarded += 1
                elif t - step < config.horizon - 1:
                    keep.append((topic, step))
            run.pending[user] = keep
            run.personal[user] = personal
        state.interest = fold(state.interest, vectors[basket.items].mean(axis=0), weight * len(basket.items),
                              basket.ts, config.half_life_s)
        state.bought.update(basket.items.tolist())
        state.bought_topics |= basket_topics
    return [run.stats for run in runs]


def policy_grid(rates: Sequence[float], seeds: Sequence[int]) -> list[Policy]:
    """exploit once (it is deterministic), then random and thompson at each rate and seed."""
    grid = [Policy("exploit", 0.0, seeds[0] if seeds else 0)]
    for name in ("random", "thompson"):
        for rate in rates:
            grid += [Policy(name, rate, seed) for seed in seeds]
    return grid


def summarise(
    policies: Sequence[Policy], stats: Sequence[PolicyStats], topic_names: Sequence[str] | None = None
) -> list[dict]:
    """One row per (policy, rate): means over seeds (and their spread), NDCG cost vs exploit."""
    groups: dict[tuple[str, float], list[tuple[Policy, PolicyStats]]] = {}
    for p, s in zip(policies, stats):
        groups.setdefault((p.name, p.rate), []).append((p, s))
    rows = []
    for (name, rate), members in groups.items():
        summaries = [s.summary() for _, s in members]
        row: dict = {"policy": name, "rate": rate, "label": members[0][0].label, "seeds": [p.seed for p, _ in members]}
        for key in summaries[0]:
            values = np.array([m[key] for m in summaries])
            row[key] = float(values.mean())
            row[f"{key}_std"] = float(values.std())
        s0 = members[0][1]
        row.update(new_interests=s0.new_interests, steps=s0.steps, scored_steps=s0.scored_steps)
        explored = Counter()
        for _, s in members:
            explored.update(s.explored_topics)
        total = sum(explored.values())
        if total:
            top = explored.most_common(3)
            row["top_explored_topics"] = [
                {"topic": topic_names[t] if topic_names else str(t), "share": n / total} for t, n in top
            ]
        rows.append(row)
    base = next((r for r in rows if r["policy"] == "exploit"), None)
    for r in rows:
        r["ndcg_cost_pct"] = (
            100.0 * (base["ndcg@10"] - r["ndcg@10"]) / base["ndcg@10"] if base and base["ndcg@10"] else 0.0
        )
    return rows


def claims(rows: Sequence[dict], budget_pct: float) -> list[str]:
    """Plain sentences: each exploring policy's discovery vs exploit's, and its NDCG cost vs the budget."""
    base = next((r for r in rows if r["policy"] == "exploit"), None)
    if base is None:
        return []
    out = []
    for r in rows:
        if r["policy"] == "exploit":
            continue
        verdict = "within" if r["ndcg_cost_pct"] <= budget_pct else "OVER"
        out.append(
            f"{r['label']} discovers {100 * r['discovery']:.1f}% of new interests vs {100 * base['discovery']:.1f}% "
            f"for exploit ({100 * r['discovery_ahead']:.1f}% vs {100 * base['discovery_ahead']:.1f}% "
            f"at least one basket ahead), "
            f"NDCG@10 cost {r['ndcg_cost_pct']:.1f}% ({verdict} the {budget_pct:g}% budget)"
        )
    return out


def format_table(rows: Sequence[dict]) -> str:
    header = f"{'policy':<14}{'rate':>6}{'discovery':>13}{'ahead':>8}{'steps ahead':>13}{'NDCG@10':>9}{'HR@10':>8}" \
             f"{'NDCG cost':>11}{'explored/step':>15}{'explore reward':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        spread = f"±{100 * r['discovery_std']:.1f}" if len(r["seeds"]) > 1 and r["policy"] != "exploit" else ""
        lines.append(
            f"{r['label']:<14}{r['rate']:>6.2f}{100 * r['discovery']:>7.1f}%{spread:>5}"
            f"{100 * r['discovery_ahead']:>7.1f}%{r['steps_ahead']:>13.2f}"
            f"{r['ndcg@10']:>9.4f}{r['hr@10']:>8.4f}{r['ndcg_cost_pct']:>10.1f}%"
            f"{r['explored_per_step']:>15.2f}{100 * r['explore_reward_rate']:>15.1f}%"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


def _rates(value: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--rate takes comma-separated numbers like 0.1,0.2, not {value!r}") from exc
    if not rates or any(not 0 < r <= 1 for r in rates):
        raise argparse.ArgumentTypeError(f"exploration rates must be in (0, 1], got {value!r}")
    return rates


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, not {value!r}") from exc
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return seeds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", type=Path, default=None, help="the Online Retail file (default: the shared parquet)")
    p.add_argument("--rate", type=_rates, default=DEFAULT_RATES,
                   help="comma-separated exploration rates for random and thompson (default: 0.1,0.2)")
    p.add_argument("--users", type=int, default=0,
                   help="replay this many eligible customers drawn at random (default 0: all)")
    p.add_argument("--min-invoices", type=int, default=4, help="customers with at least this many invoices")
    p.add_argument("--topics", type=int, default=24, help="k-means topics (the bandit's arms)")
    p.add_argument("--horizon", type=int, default=3, help="baskets in which a topic purchase rewards an explored slot")
    p.add_argument("--seeds", type=_seeds, default=DEFAULT_SEEDS, help="comma-separated policy seeds (default: 0,1,2)")
    p.add_argument("--ndcg-budget", type=float, default=DEFAULT_NDCG_BUDGET_PCT,
                   help="the NDCG@10 cost (%% of exploit's) an exploring policy may spend (default: 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from training.datasets import default_online_retail_path, load_online_retail

    started = time.perf_counter()
    progress = not args.json
    log = load_online_retail(args.path or default_online_retail_path())
    item_ids = log.items["item_id"].astype(str).tolist()
    titles = log.items["title"].astype(str).tolist()
    vectors = item_vectors(titles, progress=progress)
    item_topics, names = topics(vectors, titles, args.topics, seed=0)
    baskets = retail_user_baskets(log, {item: i for i, item in enumerate(item_ids)}, min_invoices=args.min_invoices)
    eligible = len(baskets)
    if args.users and args.users < eligible:
        pick = np.random.default_rng(0).choice(sorted(baskets), size=args.users, replace=False)
        baskets = {u: baskets[u] for u in sorted(pick)}
    config = SimConfig(horizon=args.horizon)
    policies = policy_grid(args.rate, args.seeds)
    if progress:
        print(f"explore-sim: replaying {len(baskets)} of {eligible} customers "
              f"({sum(len(b) for b in baskets.values())} baskets) under {len(policies)} policy runs...",
              file=sys.stderr)
    stats = simulate(vectors, item_topics, baskets, policies, config)
    rows = summarise(policies, stats, names)
    sentences = claims(rows, args.ndcg_budget)
    result = {
        "dataset": {"items": len(item_ids), "eligible_users": eligible, "users": len(baskets),
                    "baskets": sum(len(b) for b in baskets.values()), "min_invoices": args.min_invoices},
        "config": {"k": config.k, "horizon": config.horizon, "topics": len(names), "rates": list(args.rate),
                   "seeds": list(args.seeds), "half_life_s": config.half_life_s,
                   "prior_strength": config.prior_strength, "ndcg_budget_pct": args.ndcg_budget,
                   "exclude_bought": True, "explored_slots": "tail"},
        "topics": names,
        "rows": rows,
        "claims": sentences,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    d = result["dataset"]
    print(f"Exploration replay, Online Retail: {d['users']} of {d['eligible_users']} customers with >= "
          f"{d['min_invoices']} invoices, {d['baskets']} baskets, {d['items']} items, {len(names)} topics, "
          f"k={config.k}, reward horizon {config.horizon} baskets, seeds {','.join(map(str, args.seeds))}")
    print(f"new interests: {rows[0]['new_interests']} (topics first bought at a step >= 1); "
          f"scored steps: {rows[0]['scored_steps']} of {rows[0]['steps']}")
    print()
    print(format_table(rows))
    print("discovery: new interests shown at or before their first purchase; ahead: shown at least one basket "
          "before; steps ahead: mean over discovered; NDCG cost: % of exploit's NDCG@10; explore reward: share of "
          f"explored slots whose topic was bought within {config.horizon} baskets")
    print()
    for sentence in sentences:
        print(sentence)
    print(f"\n(wall time {result['wall_s']:.0f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamrec explore-sim", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
