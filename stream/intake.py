"""Turning raw Kafka bytes into validated messages, or into a reason they were rejected.

Pure: no Kafka here, so every rejection rule is unit-tested. The worker dead-letters whatever
`decode` rejects, with the reason code (for counting) and a readable detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Generic, TypeVar

from pydantic import ValidationError

from inference.schemas import Message

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 256 * 1024
    max_depth: int = 32
    max_future_skew_s: float = 86_400.0


@dataclass(frozen=True)
class Rejected:
    reason: str  # a short code: too_large, not_utf8, not_json, too_deep, not_object, invalid, future_ts
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class Accepted(Generic[M]):
    message: M


def json_depth(value: object) -> int:
    """Nesting depth of decoded JSON, without recursion (hostile input can be very deep)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node)
    return depth


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def decode(raw: bytes | None, model: type[M], limits: Limits, now: datetime | None = None) -> Accepted[M] | Rejected:
    if raw is None:
        return Rejected("not_json", "empty message value")
    if len(raw) > limits.max_bytes:
        return Rejected("too_large", f"{len(raw)} bytes > limit {limits.max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("not_utf8", str(exc)[:200])
    try:
        data = json.loads(text)
    except RecursionError:
        return Rejected("too_deep", f"nesting deeper than the parser allows (limit {limits.max_depth})")
    except ValueError as exc:
        return Rejected("not_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    depth = json_depth(data)
    if depth > limits.max_depth:
        return Rejected("too_deep", f"nesting depth {depth} > limit {limits.max_depth}")
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _validation_detail(exc))
    ts = getattr(message, "ts", None)
    if ts is not None:
        latest = (now or datetime.now(timezone.utc)) + timedelta(seconds=limits.max_future_skew_s)
        if ts > latest:
            return Rejected("future_ts", f"ts {ts.isoformat()} is after {latest.isoformat()}")
    return Accepted(message)
