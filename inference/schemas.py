"""Message schemas for every streamrec topic: the public contract (DESIGN.md §3).

One module that `stream/`, `inference/` and `training/` all import, so it imports nothing
heavier than pydantic. Unknown extra fields are ignored; missing or mistyped required fields
raise `pydantic.ValidationError`, which the worker turns into a dead-letter record.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1

# Bounds that keep one hostile message from costing unbounded memory or time.
MAX_ID_LEN = 128
MAX_TEXT_LEN = 4_000
MAX_K = 200


class Message(BaseModel):
    """Base of every message: ignore unknown fields, reject wrong types, carry the schema version."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    schema_: Literal[1] = Field(alias="schema", default=SCHEMA_VERSION)

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

    schema_: Literal[1] = Field(alias="schema")
    event_id: str = Id
    user_id: str = Id
    type: EventType
    ts: AwareDatetime
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

    schema_: Literal[1] = Field(alias="schema")
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

    schema_: Literal[1] = Field(alias="schema")
    user_id: str = Id
    text: str = Field(min_length=1, max_length=MAX_TEXT_LEN)
    ts: AwareDatetime | None = None


class RequestFilters(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    category: str | None = Field(default=None, max_length=MAX_ID_LEN)
    max_price: float | None = Field(default=None, ge=0)
    min_price: float | None = Field(default=None, ge=0)


class Request(Message):
    """An on-demand request for recommendations, on `streamrec.requests`, keyed by user id."""

    schema_: Literal[1] = Field(alias="schema")
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
    generated_at: AwareDatetime


class DeadLetter(Message):
    """A message that could not be processed, with its original bytes and the reason."""

    topic: str
    partition: int
    offset: int
    key: str | None = None  # base64 of the original key bytes
    value: str | None = None  # base64 of the original value bytes
    error: str
    at: AwareDatetime

    @staticmethod
    def encode_bytes(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")


class Erasure(Message):
    """A request to forget a user, on `streamrec.erasures`, keyed by user id."""

    schema_: Literal[1] = Field(alias="schema")
    erasure_id: str = Id
    user_id: str = Id


class ErasureConfirmed(Message):
    """Published on `streamrec.erasures-confirmed` once a user's state is gone from every store."""

    erasure_id: str
    user_id: str
    erased: list[str]  # what held state for the user and was cleared, e.g. ["profile"]
    at: AwareDatetime


class ModelUpdate(Message):
    """Announces a new encoder version on `streamrec.model-updates` (issue: training rollout)."""

    version: str
    path: str
    dim: int
    at: AwareDatetime


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
}
"""Topic suffix (after the prefix) → the model its values must satisfy."""

