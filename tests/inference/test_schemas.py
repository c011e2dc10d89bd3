import json

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
