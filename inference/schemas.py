"""Message schemas for every streamrec topic: the public contract (DESIGN.md §3).

One module that `stream/`, `inference/` and `training/` all import, so it imports nothing
heavier than pydantic. Unknown extra fields are ignored; missing or mistyped required fields
raise `pydantic.ValidationError`, which the worker turns into a dead-letter record.

Bytes from a topic go through `Message.from_wire`, which validates in pydantic's strict JSON mode:
`"3"`, `3.0` or `true` for an integer, `"yes"` for a boolean, a number for a timestamp are errors,
not coerced. Python constructors (`Event(...)`, `model_validate(dict)`) stay lax, because our own
code builds messages from numpy and pandas values; timestamps and the schema version are checked
the same way in both.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

# Bounds that keep one hostile message from costing unbounded memory or time.
MAX_ID_LEN = 128
MAX_TEXT_LEN = 4_000
MAX_K = 200

# RFC 3339 section 5.6 date-time; its note allows a space for the "T", and both letters in either case.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _rfc3339(value: object) -> object:
    """Parse an RFC 3339 string ourselves: pydantic would also take 1304244000 or "1304244000" as
    Unix time, even in strict mode, and a string handed on by a validator is Python input, which
    strict mode refuses to turn into a datetime."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a timestamp must be an RFC 3339 string such as 2011-05-01T10:00:00Z, not {type(value).__name__}")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 timestamp such as 2011-05-01T10:00:00Z")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0) if zulu else (1 if sign == "+" else -1) * timedelta(hours=int(off_h), minutes=int(off_m))
        micro = int((fraction or "0")[:6].ljust(6, "0"))  # finer digits are dropped, as pydantic does
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, timezone(offset))
    except ValueError as exc:
        raise ValueError(f"{value[:40]!r} is not a valid date and time: {exc}") from None


def _exact_version(value: object) -> object:
    # Literal[1] compares by equality, so true and 1.0 would pass as 1, even in strict mode.
    if isinstance(value, (bool, float)):
        raise ValueError(f"schema must be the integer {SCHEMA_VERSION}, not {value!r}")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
"""An aware datetime, given as an RFC 3339 string on the wire (DESIGN.md §3)."""

SchemaVersion = Annotated[Literal[1], BeforeValidator(_exact_version)]


class Message(BaseModel):
    """Base of every message: ignore unknown fields, reject wrong types, carry the schema version."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    schema_: SchemaVersion = Field(alias="schema", default=SCHEMA_VERSION)

    @classmethod
    def from_wire(cls, raw: bytes | str) -> Self:
        """Validate one message as it came from a topic: strict JSON mode, so mistyped values are
        errors (DESIGN.md §3). Enum values and RFC 3339 strings are JSON's own spelling of those
        types, and strict JSON mode accepts them. Raises `pydantic.ValidationError`."""
        return cls.model_validate_json(raw, strict=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


Id = Field(min_length=1, max_length=MAX_ID_LEN)


class EventType(str, Enum):
    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    remove_from_cart = "remove_from_cart"
    purchase = "purchase"
    search = "search"
    impression = "impression"


class Event(Message):
    """A clickstream event on `streamrec.events`, keyed by user id."""

    schema_: SchemaVersion = Field(alias="schema")
    event_id: str = Id
    user_id: str = Id
    type: EventType
    ts: Timestamp
    item_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LEN)
    quantity: int = Field(default=1, ge=1, le=100_000)
    price: float | None = Field(default=None, ge=0, le=1e9)
    query: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    rec_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    session_id: str | None = Field(default=None, max_length=MAX_ID_LEN)
    context: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _item_unless_search(self) -> Event:
        if self.type is not EventType.search and self.item_id is None:
            raise ValueError(f"item_id is required for a {self.type.value} event")
        if self.type is EventType.search and not self.query:
            raise ValueError("query is required for a search event")
        return self


class Item(Message):
    """A catalog update on `streamrec.items`, keyed by item id. `deleted` removes it."""

    schema_: SchemaVersion = Field(alias="schema")
    item_id: str = Id
    title: str = Field(max_length=MAX_TEXT_LEN)
    description: str | None = Field(default=None, max_length=MAX_TEXT_LEN)
    category: str | None = Field(default=None, max_length=MAX_ID_LEN)
    price: float | None = Field(default=None, ge=0, le=1e9)
    in_stock: bool = True
    deleted: bool = False
    attributes: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _title_unless_deleted(self) -> Item:
        if not self.deleted and not self.title:
            raise ValueError("title must not be empty unless the item is deleted")
        return self


class Intent(Message):
    """A user's own words about what they like, on `streamrec.intents`. Embedded, never stored."""

    schema_: SchemaVersion = Field(alias="schema")
    user_id: str = Id
    text: str = Field(min_length=1, max_length=MAX_TEXT_LEN)
    ts: Timestamp | None = None


class RequestFilters(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    category: str | None = Field(default=None, max_length=MAX_ID_LEN)
    max_price: float | None = Field(default=None, ge=0)
    min_price: float | None = Field(default=None, ge=0)


class Request(Message):
    """An on-demand request for recommendations, on `streamrec.requests`, keyed by user id."""

    schema_: SchemaVersion = Field(alias="schema")
    request_id: str = Id
    user_id: str = Id
    k: int = Field(default=10, ge=1, le=MAX_K)
    filters: RequestFilters = RequestFilters()


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: str
    score: float
    position: int = Field(ge=1)
    reason: str
    explore: bool = False


class Recommendation(Message):
    """What streamrec answers on `streamrec.recommendations`, keyed by user id."""

    rec_id: str
    user_id: str
    request_id: str | None = None
    trigger_event_id: str | None = None
    items: list[RecommendedItem]
    model_version: str
    variant: str | None = None
    generated_at: Timestamp


class DeadLetter(Message):
    """A message that could not be processed, with its original bytes and the reason."""

    topic: str
    partition: int
    offset: int
    key: str | None = None  # base64 of the original key bytes
    value: str | None = None  # base64 of the original value bytes
    error: str
    at: Timestamp

    @staticmethod
    def encode_bytes(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")


class Erasure(Message):
    """A request to forget a user, on `streamrec.erasures`, keyed by user id."""

    schema_: SchemaVersion = Field(alias="schema")
    erasure_id: str = Id
    user_id: str = Id


class ErasureConfirmed(Message):
    """Published on `streamrec.erasures-confirmed` once a user's state is gone from every store."""

    erasure_id: str
    user_id: str
    erased: list[str]  # what held state for the user and was cleared, e.g. ["profile"]
    at: Timestamp


class ModelUpdate(Message):
    """Announces the encoder version workers must serve, on `streamrec.model-updates`: a refit
    (`streamrec train`) or a rollback. `path` is the exported folder, readable by every worker."""

    version: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=4096)
    dim: int = Field(ge=1)
    at: Timestamp
    reason: str | None = Field(default=None, max_length=200)  # "train", "rollback", ...
    metrics: dict[str, Any] | None = None  # the offline evaluation from the manifest


class SegmentChange(Message):
    """Published on `streamrec.segments` (keyed by user id) when a user's value segment changes:
    the new and previous segment, the RFM evidence, the purchase probability and interest group."""

    user_id: str
    segment: str
    previous: str | None = None
    recency_days: float | None = None
    frequency: int
    monetary: float
    r: int
    f: int
    m: int
    purchase_probability: float | None = None  # of a purchase in the model's horizon (days)
    horizon_days: int | None = None
    interest_group: str | None = None
    at: Timestamp  # event time of the event that changed it


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


TOPIC_MESSAGES: dict[str, type[Message]] = {
    "events": Event,
    "items": Item,
    "intents": Intent,
    "requests": Request,
    "recommendations": Recommendation,
    "deadletter": DeadLetter,
    "erasures": Erasure,
    "erasures-confirmed": ErasureConfirmed,
    "model-updates": ModelUpdate,
    "segments": SegmentChange,
}
"""Topic suffix (after the prefix) → the model its values must satisfy."""

