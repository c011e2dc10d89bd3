"""Fit and validate the purchase-probability model on a purchase log (`streamrec purchase-model`).

Time protocol (no leakage): at a cutoff T every customer seen so far gets the RFM state the worker
would hold after folding all of their purchases with ``ts <= T``, and the label "purchases again
within N days", i.e. has a purchase with ``T < ts <= T + N days``. The two half-open windows
partition time, so a purchase exactly at T is a feature (the worker scores after folding the
event at ``now``) and never a label. The model is fitted at T1 and validated at the later cutoff
T2 = T1 + N days, whose labels (T2, T2 + N] begin where the training labels end.

Metrics on the validation window: rank AUC (ties count one half), Brier score, log loss, base
rate, a 10-bin reliability table and its ECE; the same for two baselines (the training base rate
for everyone, and a recency-only logistic regression) so the numbers have context.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inference.profiles import Rfm
from inference.purchase_probability import FEATURE_NAMES, PurchaseModel, features, sigmoid

DEFAULT_HORIZON_DAYS = 30.0
DEFAULT_L2 = 1.0
DEFAULT_OUT = Path(".streamrec") / "models"
MODEL_FILE = "purchase_probability.json"
REPORT_FILE = "purchase_probability.md"
PLOT_FILE = "purchase_probability_calibration.png"
RELIABILITY_BINS = 10
_EPOCH = pd.Timestamp(0, tz="UTC")


# --------------------------------------------------------------------------------------------
# Snapshots: RFM state and labels at a cutoff


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """UTC timestamps to epoch seconds (the worker's time unit), whatever pandas' resolution."""
    return ((ts - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


def rfm_at(purchases: pd.DataFrame, cutoff: float) -> dict[str, Rfm]:
    """Each customer's :class:`Rfm` after folding every purchase line with ``ts <= cutoff``.

    The same aggregates :func:`inference.profiles.apply_event` keeps: first and last purchase
    time, one purchase per line, monetary = sum of quantity * price. Customers with no line up to
    the cutoff are absent (the worker would not know them yet).
    """
    ts = epoch_seconds(purchases["ts"])
    past = purchases.loc[ts <= cutoff, ["user_id", "quantity", "price"]].assign(
        _ts=ts[ts <= cutoff],
        _spend=lambda f: f["quantity"].to_numpy(dtype=np.float64) * f["price"].to_numpy(dtype=np.float64),
    )
    agg = past.groupby("user_id", sort=True).agg(
        first=("_ts", "min"), last=("_ts", "max"), n=("_ts", "size"), spend=("_spend", "sum")
    )
    return {
        str(user): Rfm(first_ts=float(row.first), last_purchase_ts=float(row.last), purchases=int(row.n),
                       monetary=float(row.spend))
        for user, row in zip(agg.index, agg.itertuples(index=False))
    }


def buyers_between(purchases: pd.DataFrame, start: float, end: float) -> set[str]:
    """Customers with a purchase in the half-open window ``start < ts <= end``."""
    ts = epoch_seconds(purchases["ts"])
    return set(purchases.loc[(ts > start) & (ts <= end), "user_id"].astype(str))


@dataclass(frozen=True)
class Snapshot:
    """The rows of one cutoff: customer ids, their feature rows and their 0/1 labels."""

    cutoff: float
    horizon_days: float
    user_ids: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray


def snapshot(purchases: pd.DataFrame, cutoff: float, horizon_days: float) -> Snapshot:
    """Features from data up to ``cutoff``, labels from ``(cutoff, cutoff + horizon]`` only.

    Features go through :func:`inference.purchase_probability.features`, the very function the
    worker calls, so training and serving cannot drift apart.
    """
    state = rfm_at(purchases, cutoff)
    buyers = buyers_between(purchases, cutoff, cutoff + horizon_days * 86_400.0)
    users = tuple(state)
    x = np.array([features(state[u], cutoff) for u in users], dtype=np.float64).reshape(len(users), len(FEATURE_NAMES))
    y = np.array([u in buyers for u in users], dtype=np.int64)
    return Snapshot(cutoff=cutoff, horizon_days=horizon_days, user_ids=users, x=x, y=y)


# --------------------------------------------------------------------------------------------
# Logistic regression


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float = DEFAULT_L2, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (IRLS); the intercept is not penalised.

    Minimises ``sum(log loss) + l2/2 * |w|^2`` over standardised columns ``z``. The penalty keeps
    the Newton system well-posed when a column separates the classes (tiny or synthetic data).
    Step halving guarantees the objective never rises.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, k = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(k + 1, float(l2))
    penalty[-1] = 0.0
    base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if n else 0.5
    beta = np.zeros(k + 1)
    beta[-1] = math.log(base / (1 - base))

    def objective(b: np.ndarray) -> float:
        s = design @ b
        return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * np.sum(penalty * b * b))

    current = objective(beta)
    for _ in range(max_iter):
        p = sigmoid(design @ beta)
        grad = design.T @ (p - y) + penalty * beta
        w = p * (1 - p)
        hess = design.T @ (design * w[:, None]) + np.diag(penalty) + 1e-12 * np.eye(k + 1)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = beta - t * step
            value = objective(candidate)
            if value <= current + 1e-12 or t < 1e-8:
                break
            t /= 2
        beta, previous, current = candidate, current, value
        if abs(previous - current) <= tol * max(1.0, abs(current)):
            break
    return beta[:-1], float(beta[-1])


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations; a constant column gets scale 1 (it then does nothing)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


# --------------------------------------------------------------------------------------------
# Metrics


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U); tied scores share their mean rank.

    NaN when one class is absent: the AUC is then undefined, not 0.5.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    mean_rank = upper - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """Equal-width probability bins ``[i/bins, (i+1)/bins)`` (the last one includes 1).

    Each row: bin edges, mean predicted probability, observed purchase rate and count; an empty
    bin has count 0 and ``None`` means (JSON has no NaN).
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        rows.append({
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "mean_predicted": float(p[mask].mean()) if count else None,
            "observed_rate": float(y[mask].mean()) if count else None,
            "count": count,
        })
    return rows


def expected_calibration_error(table: list[dict[str, Any]]) -> float:
    """Count-weighted mean |mean predicted - observed rate| over the bins of a reliability table."""
    n = sum(r["count"] for r in table)
    if n == 0:
        return float("nan")
    return float(sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in table if r["count"]) / n)


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """All validation metrics of one set of predictions."""
    table = reliability(y, p)
    return {
        "auc": auc(y, p),
        "brier": brier(y, p),
        "log_loss": log_loss(y, p),
        "ece": expected_calibration_error(table),
        "base_rate": float(np.mean(y)),
        "mean_predicted": float(np.mean(p)),
        "n": int(len(y)),
        "reliability": table,
    }


# --------------------------------------------------------------------------------------------
# The whole fit


def default_cutoffs(purchases: pd.DataFrame, horizon_days: float,
                    validation_cutoff: float | None = None) -> tuple[float, float]:
    """(T1, T2): T2 = last purchase - N days unless given, T1 = T2 - N days."""
    ts = epoch_seconds(purchases["ts"])
    horizon_s = horizon_days * 86_400.0
    t2 = float(ts.max()) - horizon_s if validation_cutoff is None else float(validation_cutoff)
    t1 = t2 - horizon_s
    if t1 <= float(ts.min()):
        span = (float(ts.max()) - float(ts.min())) / 86_400.0
        raise ValueError(
            f"the log spans {span:.1f} days, too short for a training cutoff before the validation cutoff "
            f"with a {horizon_days:g}-day horizon (needs the first purchase before T1 = T2 - {horizon_days:g} days); "
            "use a shorter --horizon-days"
        )
    return t1, t2


def _iso(epoch_s: float) -> str:
    return pd.Timestamp(epoch_s, unit="s", tz="UTC").isoformat()


def _need_both_classes(snap: Snapshot, what: str) -> None:
    positives = int(snap.y.sum())
    if len(snap.y) == 0 or positives in (0, len(snap.y)):
        raise ValueError(
            f"the {what} window at {_iso(snap.cutoff)} has {len(snap.y)} customers and {positives} buyers; "
            "both buyers and non-buyers are needed (try another --horizon-days)"
        )


def fit_purchase_model(purchases: pd.DataFrame, horizon_days: float = DEFAULT_HORIZON_DAYS,
                       l2: float = DEFAULT_L2, validation_cutoff: float | None = None,
                       source: str | None = None) -> tuple[PurchaseModel, dict[str, Any]]:
    """Fit at T1, validate at T2 = T1 + N days; return the model and the full result.

    The returned model is the one fitted at T1, so the validation metrics stored in it describe
    exactly the shipped coefficients.
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
    if len(purchases) == 0:
        raise ValueError("the purchase log is empty")
    t1, t2 = default_cutoffs(purchases, horizon_days, validation_cutoff)
    train = snapshot(purchases, t1, horizon_days)
    valid = snapshot(purchases, t2, horizon_days)
    _need_both_classes(train, "training")
    _need_both_classes(valid, "validation")

    mean, scale = standardiser(train.x)
    coef, intercept = fit_logistic((train.x - mean) / scale, train.y, l2)
    training = {
        "source": source,
        "data_start": _iso(float(epoch_seconds(purchases["ts"]).min())),
        "data_end": _iso(float(epoch_seconds(purchases["ts"]).max())),
        "train_cutoff": _iso(t1),
        "train_label_end": _iso(t1 + horizon_days * 86_400.0),
        "validation_cutoff": _iso(t2),
        "validation_label_end": _iso(t2 + horizon_days * 86_400.0),
        "features_window": "ts <= cutoff",
        "labels_window": "cutoff < ts <= cutoff + horizon_days",
        "n_train": int(len(train.y)),
        "n_validation": int(len(valid.y)),
        "train_base_rate": float(train.y.mean()),
        "event_unit": "purchase line (one invoice line = one purchase event)",
    }

    provisional = PurchaseModel(
        feature_names=FEATURE_NAMES, coefficients=tuple(coef), intercept=intercept, means=tuple(mean),
        scales=tuple(scale), horizon_days=horizon_days, version="unversioned", l2=l2,
    )
    p_model = provisional.predict_features(valid.x)
    p_train = provisional.predict_features(train.x)

    # Baselines, fitted on the training window too.
    p_const = np.full(len(valid.y), train.y.mean())
    r = FEATURE_NAMES.index("log1p_recency_days")
    r_coef, r_intercept = fit_logistic(((train.x[:, r] - mean[r]) / scale[r])[:, None], train.y, l2)
    p_recency = sigmoid(((valid.x[:, r] - mean[r]) / scale[r]) * r_coef[0] + r_intercept)

    metrics = {
        "model": evaluate(valid.y, p_model),
        "baseline_base_rate": evaluate(valid.y, p_const),
        "baseline_recency": evaluate(valid.y, p_recency),
        "train_auc": auc(train.y, p_train),
    }
    digest = hashlib.sha256(
        json.dumps([list(coef), intercept, list(mean), list(scale), horizon_days, t1], sort_keys=True).encode()
    ).hexdigest()[:8]
    version = f"pp-{pd.Timestamp(t1, unit='s', tz='UTC'):%Y%m%d}-{horizon_days:g}d-{digest}"
    model = PurchaseModel(
        feature_names=FEATURE_NAMES, coefficients=tuple(coef), intercept=intercept, means=tuple(mean),
        scales=tuple(scale), horizon_days=horizon_days, version=version, training=training,
        metrics=_json_safe(metrics), l2=l2,
    )
    result = {"version": version, "horizon_days": horizon_days, "l2": l2, "training": training,
              "metrics": model.metrics,
              "coefficients": dict(zip(FEATURE_NAMES, map(float, coef))), "intercept": intercept}
    return model, result


def _json_safe(value: Any) -> Any:
    """NaN and infinities to None, so the result is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Output: table, report, command line

_ROWS = (("model", "rfm logistic"), ("baseline_recency", "recency only"), ("baseline_base_rate", "training base rate"))


def _f(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The metrics of a result as plain-text tables (summary, then the model's reliability)."""
    t, m = result["training"], result["metrics"]
    lines = [
        f"purchase probability: buys within {result['horizon_days']:g} days  (model {result['version']})",
        f"train      cutoff {t['train_cutoff']}  customers {t['n_train']}  base rate {t['train_base_rate']:.4f}",
        f"validation cutoff {t['validation_cutoff']}  customers {t['n_validation']}  "
        f"base rate {m['model']['base_rate']:.4f}  labels until {t['validation_label_end']}",
        "",
        f"{'predictor':<20}{'AUC':>8}{'Brier':>9}{'log loss':>10}{'ECE':>8}{'mean p':>9}",
    ]
    for key, label in _ROWS:
        e = m[key]
        lines.append(f"{label:<20}{_f(e['auc']):>8}{_f(e['brier']):>9}{_f(e['log_loss']):>10}"
                     f"{_f(e['ece']):>8}{_f(e['mean_predicted']):>9}")
    lines += ["", "reliability (rfm logistic, validation window)",
              f"{'bin':<12}{'mean predicted':>16}{'observed':>10}{'count':>8}"]
    for row in m["model"]["reliability"]:
        lines.append(f"{row['lo']:.1f}-{row['hi']:.1f}{'':<5}{_f(row['mean_predicted']):>16}"
                     f"{_f(row['observed_rate']):>10}{row['count']:>8}")
    return "\n".join(lines)


def write_report(result: dict[str, Any], out_dir: Path, stem: str = "purchase_probability") -> list[Path]:
    """A markdown report and a reliability plot in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    plot = out_dir / f"{stem}_calibration.png"
    try:
        _plot(result, plot)
        written.append(plot)
    except ImportError:
        plot = None  # matplotlib comes with the train/dev extras; the report stands without it
    t, m = result["training"], result["metrics"]
    md = [
        "# Purchase probability model",
        "",
        f"Probability that a customer buys again within **{result['horizon_days']:g} days**, from the RFM "
        f"state the worker keeps. Model `{result['version']}`, L2 = {result['l2']:g}.",
        "",
        f"- Data: {t.get('source') or 'purchase log'}, {t['data_start']} to {t['data_end']}.",
        f"- Fitted at T1 = {t['train_cutoff']}: {t['n_train']} customers, features from purchases with "
        f"ts <= T1, labels from (T1, {t['train_label_end']}]; base rate {t['train_base_rate']:.4f}.",
        f"- Validated at T2 = {t['validation_cutoff']}: {t['n_validation']} customers, labels from "
        f"(T2, {t['validation_label_end']}]; base rate {m['model']['base_rate']:.4f}.",
        "",
        "| predictor | AUC | Brier | log loss | ECE | mean p |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in _ROWS:
        e = m[key]
        md.append(f"| {label} | {_f(e['auc'])} | {_f(e['brier'])} | {_f(e['log_loss'])} | {_f(e['ece'])} | "
                  f"{_f(e['mean_predicted'])} |")
    md += ["", f"Training-window AUC (in sample): {_f(m['train_auc'])}.", "",
           "## Reliability (validation window)", "",
           "| bin | mean predicted | observed | count |", "|---|---|---|---|"]
    for row in m["model"]["reliability"]:
        md.append(f"| {row['lo']:.1f}-{row['hi']:.1f} | {_f(row['mean_predicted'])} | "
                  f"{_f(row['observed_rate'])} | {row['count']} |")
    if plot is not None:
        md += ["", f"![reliability]({plot.name})"]
    md += ["", "## Coefficients (standardised features)", "", "| feature | coefficient |", "|---|---|"]
    md += [f"| {name} | {value:+.4f} |" for name, value in result["coefficients"].items()]
    md += [f"| intercept | {result['intercept']:+.4f} |", ""]
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join(md), encoding="utf-8")
    return [report, *written]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for key, label in _ROWS[:2]:
        rows = [r for r in result["metrics"][key]["reliability"] if r["count"]]
        ax.plot([r["mean_predicted"] for r in rows], [r["observed_rate"] for r in rows], marker="o",
                label=f"{label} (ECE {_f(result['metrics'][key]['ece'], 3)})")
    ax.axhline(result["metrics"]["model"]["base_rate"], color="black", linewidth=0.8, linestyle="--",
               label="validation base rate")
    ax.set_ylabel("observed purchase rate")
    ax.set_title(f"Reliability, validation window ({result['horizon_days']:g} days)")
    ax.legend(fontsize=8, loc="upper left")
    rows = result["metrics"]["model"]["reliability"]
    hist.bar([(r["lo"] + r["hi"]) / 2 for r in rows], [r["count"] for r in rows], width=0.09, color="C0")
    hist.set_xlabel("predicted probability (rfm logistic)")
    hist.set_ylabel("customers")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cutoff(value: str) -> float:
    try:
        stamp = pd.Timestamp(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a date: {value!r}") from e
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return float((stamp - _EPOCH) / pd.Timedelta(seconds=1))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `streamrec purchase-model`."""
    p.add_argument("--path", type=Path, default=None,
                   help="Online Retail .parquet/.csv(.gz) (default: the shared Online Retail file)")
    p.add_argument("--horizon-days", type=float, default=DEFAULT_HORIZON_DAYS,
                   help="predict a purchase within this many days (default: 30)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for {MODEL_FILE}, the report and the plot, or a .json file path "
                        f"(default: {DEFAULT_OUT / MODEL_FILE})")
    p.add_argument("--validation-cutoff", type=_cutoff, default=None,
                   help="T2 as a date/time, UTC unless given (default: last purchase - horizon)")
    p.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty on standardised coefficients")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run(args: argparse.Namespace) -> int:
    """Fit, validate, write model + report, print the metrics. 0 on success, 2 on unusable input."""
    from training.datasets import default_online_retail_path, load_online_retail

    try:
        path = args.path or default_online_retail_path()
        log = load_online_retail(path)
        model, result = fit_purchase_model(log.purchases, horizon_days=args.horizon_days, l2=args.l2,
                                           validation_cutoff=args.validation_cutoff, source=Path(path).name)
    except (FileNotFoundError, ValueError) as e:
        print(f"streamrec purchase-model: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.suffix == ".json":
        model_path, out_dir, stem = out, out.parent, out.stem
    else:
        model_path, out_dir, stem = out / MODEL_FILE, out, Path(MODEL_FILE).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path.write_text(model.to_json(), encoding="utf-8")
    written = write_report(result, out_dir, stem)
    result = {**result, "model_path": str(model_path), "report": [str(p) for p in written]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        print(f"\nmodel: {model_path}\nreport: {', '.join(str(p) for p in written)}")
    return 0
