"""Reading a free text as the interests it lists."""

from __future__ import annotations

from inference.interest_phrases import interest_phrases


def test_interest_phrases_split_lists_and_keep_order_once() -> None:
    assert interest_phrases("running shoes, camping gear;tents\nrunning shoes") == [
        "running shoes", "camping gear", "tents"
    ]
    assert interest_phrases("vintage tea sets") == ["vintage tea sets"]
    assert interest_phrases(" , ;\n") == []
