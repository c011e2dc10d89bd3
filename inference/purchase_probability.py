"""Purchase probability: "will this user buy within the next N days", from RFM aggregates alone.

The worker already keeps an :class:`~inference.profiles.Rfm` per user, so the score is a small
logistic regression over features of that state and the event time: no history is replayed and
no extra state is stored. Fitting lives in :mod:`training.purchase_probability`; this module only
applies a fitted model, with numpy, so the worker stays free of pandas and torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.profiles import Rfm

SCHEMA = 1
KIND = "purchase_probability"
DAY_S = 86_400.0
MONTH_DAYS = 30.0

FEATURE_NAMES: tuple[str, ...] = (
    "log1p_recency_days",
    "log1p_frequency",
    "log1p_monetary",
    "log1p_tenure_days",
    "log1p_purchases_per_month",
)
"""The features :func:`features` computes, in order; a model must name exactly these."""

DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "purchase_probability.json"
"""The model fitted on Online Retail that the worker ships (``streamrec purchase-model`` rebuilds it)."""


class PurchaseModelError(ValueError):
    """A model file or value that cannot be used to score users."""


def features(rfm: Rfm, now: float) -> np.ndarray:
    """The feature vector of a user's RFM state at event time ``now`` (epoch seconds).

    Durations are in days and log-compressed: RFM quantities are heavy-tailed, and a log keeps a
    few big wholesale customers from dominating the fit. A user who never bought gets frequency
    and monetary 0 and the time since their first event as recency ("nothing bought since
    arriving"), so they never score above a buyer with the same tenure when the fitted signs are
    the usual ones (recent, frequent, big spenders buy again). An event time before a stored
    timestamp (out-of-order delivery) counts as zero elapsed time, never negative.
    """
    tenure_days = 0.0 if rfm.first_ts is None else max(now - rfm.first_ts, 0.0) / DAY_S
    if rfm.last_purchase_ts is None or rfm.purchases <= 0:
        recency_days, purchases, monetary = tenure_days, 0, 0.0
    else:
        recency_days = max(now - rfm.last_purchase_ts, 0.0) / DAY_S
        purchases, monetary = rfm.purchases, max(rfm.monetary, 0.0)
    # Tenure floored at one month: a week-old user with 3 purchases is not buying 13 a month.
    per_month = purchases / max(tenure_days / MONTH_DAYS, 1.0)
    return np.log1p(np.array([recency_days, purchases, monetary, tenure_days, per_month], dtype=np.float64))


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """Logistic function, stable for large |z| (no overflow warnings)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class PurchaseModel:
    """A fitted logistic regression over standardised :func:`features`, with its provenance.

    ``training`` records the data window (cutoff dates, counts) and ``metrics`` the scores on the
    later validation window, so a shipped file says what it was fitted on and how well it did.
    """

    feature_names: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float
    means: tuple[float, ...]
    scales: tuple[float, ...]
    horizon_days: float
    version: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    l2: float = 0.0
    _w: np.ndarray = field(init=False, repr=False, compare=False)
    _mu: np.ndarray = field(init=False, repr=False, compare=False)
    _sd: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        for name in ("coefficients", "means", "scales"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "intercept", float(self.intercept))
        object.__setattr__(self, "horizon_days", float(self.horizon_days))
        _check(self)
        # Arrays built once: predict() runs on every event.
        object.__setattr__(self, "_w", np.array(self.coefficients, dtype=np.float64))
        object.__setattr__(self, "_mu", np.array(self.means, dtype=np.float64))
        object.__setattr__(self, "_sd", np.array(self.scales, dtype=np.float64))

    def logit(self, x: np.ndarray) -> np.ndarray:
        """Log-odds for raw feature rows ``x`` (shape ``(n, k)`` or ``(k,)``)."""
        return ((np.asarray(x, dtype=np.float64) - self._mu) / self._sd) @ self._w + self.intercept

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for raw feature rows; the batch form used by training and evaluation."""
        return sigmoid(self.logit(x))

    def predict(self, rfm: Rfm, now: float) -> float:
        """Probability in [0, 1] that the user purchases within ``horizon_days`` after ``now``."""
        return float(self.predict_features(features(rfm, now)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": KIND,
            "version": self.version,
            "horizon_days": self.horizon_days,
            "feature_names": list(self.feature_names),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "means": list(self.means),
            "scales": list(self.scales),
            "l2": self.l2,
            "training": self.training,
            "metrics": self.metrics,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> PurchaseModel:
        if not isinstance(data, dict):
            raise PurchaseModelError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("kind") != KIND:
            raise PurchaseModelError(f"'kind' is {data.get('kind')!r}, expected {KIND!r}")
        if data.get("schema") != SCHEMA:
            raise PurchaseModelError(f"'schema' is {data.get('schema')!r}; this code reads schema {SCHEMA}")
        required = ("version", "horizon_days", "feature_names", "coefficients", "intercept", "means", "scales")
        missing = [k for k in required if k not in data]
        if missing:
            raise PurchaseModelError(f"missing fields {missing}")
        try:
            return cls(
                feature_names=tuple(str(n) for n in data["feature_names"]),
                coefficients=tuple(data["coefficients"]),
                intercept=data["intercept"],
                means=tuple(data["means"]),
                scales=tuple(data["scales"]),
                horizon_days=data["horizon_days"],
                version=str(data["version"]),
                training=dict(data.get("training") or {}),
                metrics=dict(data.get("metrics") or {}),
                l2=float(data.get("l2", 0.0)),
            )
        except PurchaseModelError:
            raise
        except (TypeError, ValueError) as e:
            raise PurchaseModelError(f"malformed field: {e}") from e

    @classmethod
    def from_json(cls, text: str) -> PurchaseModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PurchaseModelError(f"not valid JSON: {e}") from e
        return cls.from_dict(data)


def _check(model: PurchaseModel) -> None:
    if model.feature_names != FEATURE_NAMES:
        raise PurchaseModelError(
            f"model features {list(model.feature_names)} differ from this code's {list(FEATURE_NAMES)}; "
            "refit it with `streamrec purchase-model`"
        )
    k = len(FEATURE_NAMES)
    for name in ("coefficients", "means", "scales"):
        values = getattr(model, name)
        if len(values) != k:
            raise PurchaseModelError(f"'{name}' has {len(values)} values, expected {k}")
        if not all(math.isfinite(v) for v in values):
            raise PurchaseModelError(f"'{name}' holds a non-finite value")
    if not all(s > 0 for s in model.scales):
        raise PurchaseModelError("'scales' must all be > 0")
    if not math.isfinite(model.intercept):
        raise PurchaseModelError("'intercept' is not finite")
    if not (math.isfinite(model.horizon_days) and model.horizon_days > 0):
        raise PurchaseModelError(f"'horizon_days' must be > 0, got {model.horizon_days}")


def load_purchase_model(path: Path | str | None = None) -> PurchaseModel:
    """Read a model file (default: the shipped :data:`DEFAULT_MODEL_PATH`).

    Any problem is a :class:`PurchaseModelError` (or ``FileNotFoundError``) naming the file and
    how to rebuild it, so a worker fails at start-up rather than scoring with a broken model.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"purchase-probability model {path} not found; create it with `streamrec purchase-model --out DIR`"
        )
    try:
        return PurchaseModel.from_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise PurchaseModelError(f"{path} is not a purchase-probability model: not UTF-8 text") from e
    except PurchaseModelError as e:
        raise PurchaseModelError(
            f"{path} is not a usable purchase-probability model: {e}. "
            "Rebuild it with `streamrec purchase-model`"
        ) from e
