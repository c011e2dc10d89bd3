import json
from datetime import datetime, timezone

import pytest

from inference.schemas import Event
from stream.intake import Accepted, Limits, Rejected, decode, json_depth

LIMITS = Limits(max_bytes=2048, max_depth=8, max_future_skew_s=3600)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
GOOD = {"schema": 1, "event_id": "e", "user_id": "u", "type": "view", "ts": "2025-12-31T23:00:00Z", "item_id": "i"}


def reason(raw):
    result = decode(raw, Event, LIMITS, now=NOW)
    return result.reason if isinstance(result, Rejected) else "ok"


def test_good_message_is_accepted():
    result = decode(json.dumps(GOOD).encode(), Event, LIMITS, now=NOW)
    assert isinstance(result, Accepted) and result.message.user_id == "u"


@pytest.mark.parametrize("raw,expected", [
    (None, "not_json"),
    (b"", "not_json"),
    (b"{not json", "not_json"),
    (b"\xff\xfe\x00", "not_utf8"),
    (b"[1, 2]", "not_object"),
    (b'"text"', "not_object"),
    (b"x" * 3000, "too_large"),
    (json.dumps({**GOOD, "context": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}}).encode(), "too_deep"),
    (b"[" * 100_000 + b"]" * 100_000, "too_large"),
    (json.dumps({**GOOD, "type": "nope"}).encode(), "invalid"),
    (json.dumps({**GOOD, "ts": "2026-06-01T00:00:00Z"}).encode(), "future_ts"),
    # strict: what lax validation would coerce is a mistyped value
    (json.dumps({**GOOD, "quantity": "3"}).encode(), "invalid"),
    (json.dumps({**GOOD, "quantity": 3.0}).encode(), "invalid"),
    (json.dumps({**GOOD, "schema": True}).encode(), "invalid"),
    (json.dumps({**GOOD, "ts": "1767222000"}).encode(), "invalid"),
    # NaN and Infinity are not JSON, wherever they are; 1e400 overflows to infinity
    (json.dumps({**GOOD, "context": {"x": float("nan")}}).encode(), "not_json"),
    (json.dumps({**GOOD, "price": float("-inf")}).encode(), "not_json"),
    (json.dumps(GOOD).replace('"view"', '"view", "price": 1e400').encode(), "not_json"),
    # a lone surrogate escape is no Unicode text; the validating parser refuses it too
    (json.dumps(GOOD).replace('"u"', '"\\ud800"').encode(), "not_json"),
])
def test_rejections_carry_a_reason(raw, expected):
    assert reason(raw) == expected


def test_parser_recursion_limit_is_a_rejection_not_a_crash():
    deep = b"[" * 50_000 + b"]" * 50_000
    assert decode(deep, Event, Limits(max_bytes=10**6, max_depth=8), now=NOW).reason == "too_deep"
    nested = json.dumps({**GOOD, "context": {"a": 1}}).replace('{"a": 1}', "[" * 300 + "]" * 300).encode()
    assert decode(nested, Event, Limits(max_bytes=10**6, max_depth=1000), now=NOW).reason == "too_deep"


def test_non_finite_detail_names_where():
    result = decode(json.dumps({**GOOD, "context": {"x": [1, float("nan")]}}).encode(), Event, LIMITS, now=NOW)
    assert result.detail.startswith("context.x[1]:")


def test_duplicate_keys_last_one_wins():
    raw = b'{"user_id": 5, ' + json.dumps(GOOD)[1:].encode()
    assert decode(raw, Event, LIMITS, now=NOW).message.user_id == "u"
    assert reason(json.dumps(GOOD)[:-1].encode() + b', "user_id": 5}') == "invalid"


def test_invalid_detail_names_the_field():
    result = decode(json.dumps({**GOOD, "quantity": -5}).encode(), Event, LIMITS, now=NOW)
    assert "quantity" in result.detail


def test_json_depth():
    assert json_depth({}) == 1 and json_depth({"a": [1, {"b": 2}]}) == 3 and json_depth(5) == 0
