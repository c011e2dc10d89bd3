"""The worker's answer to a text sent as an intent, as scores over the catalog."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from inference.schemas import MAX_TEXT_LEN
from training.served import SERVED_DEPTH, intent_text, served_intent_scores

TITLES = ["red mug", "blue mug", "green lantern", "paper lantern", "tea towel", "oak clock"]


def test_the_worker_answers_each_listed_interest_and_ranks_the_rest_below(tiny_encoder):
    split = SimpleNamespace(item_text=TITLES, item_ids=[f"i{n}" for n in range(len(TITLES))], n_items=len(TITLES))
    texts = ["red mug, green lantern", "oak clock"]
    scores = served_intent_scores(split, texts, tiny_encoder, phrases=8)
    assert scores.shape == (2, len(TITLES))
    # each phrase is an item's own title: cosine 1, so those two items lead, whatever the whole text's vector
    assert set(scores[0].argsort(descending=True)[:2].tolist()) == {0, 2}
    assert scores[1].argmax().item() == 5
    assert scores.max().item() == -1.0  # position 1
    assert scores.min().item() >= -(SERVED_DEPTH + 1)
    assert served_intent_scores(split, texts, tiny_encoder, phrases=0)[1].argmax().item() == 5


def test_a_text_over_the_intent_limit_is_cut_after_its_last_whole_phrase():
    text = ", ".join(["jumbo bag red retrospot"] * 400)
    cut = intent_text(text)
    assert len(cut) <= MAX_TEXT_LEN and cut.endswith("retrospot") and text.startswith(cut)
    assert intent_text("short, text") == "short, text"


def test_a_catalog_without_text_is_refused(tiny_encoder):
    with pytest.raises(ValueError, match="item text"):
        served_intent_scores(SimpleNamespace(item_text=None, item_ids=[], n_items=0), ["x"], tiny_encoder, phrases=8)
