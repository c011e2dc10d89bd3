"""Turning raw Kafka bytes into validated messages, or into a reason they were rejected.

Pure: no Kafka here, so every rejection rule is unit-tested. The worker dead-letters whatever
`decode` rejects, with the reason code (for counting) and a readable detail. Validation is
strict (`Message.from_wire`): a mistyped value is `invalid`, never coerced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Generic, TypeVar

from pydantic import ValidationError
from pydantic_core import from_json

from inference.schemas import Message

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 256 * 1024
    max_depth: int = 32  # the parser itself stops at 200 levels, whatever this says
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


def _scan(value: object) -> tuple[int, bool]:
    """Nesting depth of decoded JSON and whether it holds a NaN or an infinity, in one pass and
    without recursion (hostile input can be very deep)."""
    depth, non_finite, stack = 0, False, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in node)
        elif isinstance(node, float) and not math.isfinite(node):
            non_finite = True
    return depth, non_finite


def json_depth(value: object) -> int:
    """Nesting depth of decoded JSON, without recursion (hostile input can be very deep)."""
    return _scan(value)[0]


def _non_finite_path(value: object, path: str = "") -> str | None:
    """Where the first NaN or infinity sits in decoded JSON, e.g. "context.x[2]". Called only for
    a rejected message whose depth was already checked, so the recursion is bounded."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "message")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found = _non_finite_path(child, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key)
        if found:
            return found
    return None


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
        # The parser pydantic validates with (jiter), so both passes read the same document: the
        # same winner among duplicate keys, the same refusal of lone surrogate escapes.
        data = from_json(text, allow_inf_nan=True, cache_strings="keys")
    except ValueError as exc:
        if "recursion limit" in str(exc):
            return Rejected("too_deep", f"nesting deeper than the parser's 200 levels (limit {limits.max_depth})")
        return Rejected("not_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    depth, non_finite = _scan(data)
    if depth > limits.max_depth:
        return Rejected("too_deep", f"nesting depth {depth} > limit {limits.max_depth}")
    if non_finite:
        # NaN and Infinity are not JSON (RFC 8259 section 6) and 1e400 overflows to infinity: refused
        # anywhere in the message, not only where a bounded field happens to catch them.
        where = str(_non_finite_path(data))[:200]
        return Rejected("not_json", f"{where}: NaN, Infinity and numbers beyond the double range are not accepted")
    try:
        message = model.from_wire(text)
    except ValidationError as exc:
        if all(err["type"] == "json_invalid" for err in exc.errors()):
            return Rejected("not_json", _validation_detail(exc))
        return Rejected("invalid", _validation_detail(exc))
    ts = getattr(message, "ts", None)
    if ts is not None:
        latest = (now or datetime.now(timezone.utc)) + timedelta(seconds=limits.max_future_skew_s)
        if ts > latest:
            return Rejected("future_ts", f"ts {ts.isoformat()} is after {latest.isoformat()}")
    return Accepted(message)
