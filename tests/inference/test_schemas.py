import json
from datetime import datetime, timezone

import numpy as np
import pytest
from pydantic import ValidationError

from inference.schemas import DeadLetter, Event, EventType, Intent, Item, Recommendation, Request, utcnow

GOOD_EVENT = {"schema": 1, "event_id": "e1", "user_id": "u1", "type": "purchase", "ts": "2011-01-02T10:00:00Z",
              "item_id": "85123A", "quantity": 2, "price": 2.55}


def test_event_round_trips_and_ignores_unknown_fields():
    event = Event.model_validate({**GOOD_EVENT, "shop": "extra"})
    assert event.type is EventType.purchase and event.ts.tzinfo is not None
    again = Event.model_validate_json(event.to_bytes())
    assert again == event
    assert json.loads(event.to_bytes())["schema"] == 1


@pytest.mark.parametrize("change", [
    {"event_id": None}, {"user_id": ""}, {"type": "teleport"}, {"ts": "yesterday"},
    {"ts": "2011-01-02T10:00:00"},  # no time zone: not RFC 3339
    {"quantity": -1}, {"quantity": "many"}, {"price": -3}, {"schema": 2}, {"item_id": None},
    {"user_id": "x" * 500},
    {"ts": 1_294_000_000}, {"ts": "1294000000"}, {"ts": "2011-01-02T10:00Z"}, {"ts": "2011-02-30T10:00:00Z"},
    {"ts": "2011-01-02T10:00:00+24:00"}, {"schema": True}, {"schema": 1.0},
])
def test_event_rejects_bad_fields(change):
    data = {**GOOD_EVENT, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ValidationError):
        Event.model_validate(data)


def test_search_needs_a_query_not_an_item():
    e = Event.model_validate({**GOOD_EVENT, "type": "search", "item_id": None, "query": "tea pot"} | {})
    assert e.item_id is None
    with pytest.raises(ValidationError):
        Event.model_validate({k: v for k, v in {**GOOD_EVENT, "type": "search"}.items() if k != "item_id"})


def test_missing_schema_version_is_an_error_on_input():
    with pytest.raises(ValidationError):
        Event.model_validate({k: v for k, v in GOOD_EVENT.items() if k != "schema"})


def test_item_defaults_and_deletion():
    item = Item.model_validate({"schema": 1, "item_id": "i", "title": "Teapot"})
    assert item.in_stock and not item.deleted
    assert Item.model_validate({"schema": 1, "item_id": "i", "title": "", "deleted": True}).deleted
    with pytest.raises(ValidationError):
        Item.model_validate({"schema": 1, "item_id": "i", "title": ""})


def test_intent_request_and_outputs():
    assert Intent.model_validate({"schema": 1, "user_id": "u", "text": "running shoes"}).ts is None
    req = Request.model_validate({"schema": 1, "request_id": "r", "user_id": "u", "filters": {"max_price": 5}})
    assert req.k == 10 and req.filters.max_price == 5
    with pytest.raises(ValidationError):
        Request.model_validate({"schema": 1, "request_id": "r", "user_id": "u", "k": 0})
    rec = Recommendation(rec_id="r", user_id="u", items=[], model_version="m", generated_at=utcnow())
    assert json.loads(rec.to_bytes())["schema"] == 1
    dl = DeadLetter(topic="t", partition=0, offset=3, value=DeadLetter.encode_bytes(b"\xff"), error="x", at=utcnow())
    assert dl.value == "/w=="


def test_from_wire_is_strict():
    wire = json.dumps(GOOD_EVENT)
    assert Event.from_wire(wire) == Event.model_validate(GOOD_EVENT)
    for change in ({"quantity": "2"}, {"quantity": 2.0}, {"price": "2.55"}, {"price": True}):
        with pytest.raises(ValidationError):
            Event.from_wire(json.dumps({**GOOD_EVENT, **change}))
    with pytest.raises(ValidationError):
        Item.from_wire(json.dumps({"schema": 1, "item_id": "i", "title": "t", "in_stock": "yes"}))
    with pytest.raises(ValidationError):
        Request.from_wire(json.dumps({"schema": 1, "request_id": "r", "user_id": "u", "filters": {"max_price": "5"}}))
    assert Request.from_wire(json.dumps({"schema": 1, "request_id": "r", "user_id": "u", "filters": {"max_price": 5}})).filters.max_price == 5


def test_python_construction_stays_lax_for_numpy_values():
    event = Event(schema=1, event_id="e", user_id="u", type="view", item_id="i", quantity=np.int64(3),
                  price=np.float32(2.5), ts=datetime(2011, 1, 2, tzinfo=timezone.utc))
    assert event.quantity == 3 and event.price == 2.5


@pytest.mark.parametrize("text,expected", [
    ("2011-01-02T10:00:00Z", datetime(2011, 1, 2, 10, tzinfo=timezone.utc)),
    ("2011-01-02t10:00:00z", datetime(2011, 1, 2, 10, tzinfo=timezone.utc)),
    ("2011-01-02 12:30:00+02:30", datetime(2011, 1, 2, 10, tzinfo=timezone.utc)),
    ("2011-01-02T09:00:00.25-01:00", datetime(2011, 1, 2, 10, 0, 0, 250_000, tzinfo=timezone.utc)),
    ("2011-01-02T10:00:00.1234567Z", datetime(2011, 1, 2, 10, 0, 0, 123_456, tzinfo=timezone.utc)),
])
def test_rfc3339_timestamps(text, expected):
    ts = Event.from_wire(json.dumps({**GOOD_EVENT, "ts": text})).ts
    assert ts == expected and ts.utcoffset() is not None
    assert Event.from_wire(Event.model_validate({**GOOD_EVENT, "ts": text}).to_bytes()).ts == expected
