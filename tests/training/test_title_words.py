"""Title words as learned item attributes."""

from __future__ import annotations

from training.split import ProtocolSplit
from training.title_words import title_words, with_title_words, words


def test_words_are_lower_case_and_numbers_alone_are_left_out() -> None:
    assert words("SET OF 3 CAKE TINS, PANTRY-DESIGN 12x") == ["set", "of", "cake", "tins", "pantry", "design", "12x"]
    assert words("  ") == []


def test_vocabulary_keeps_words_shared_by_enough_titles() -> None:
    vocabulary = title_words(["RED MUG", "BLUE MUG", "RED LAMP", "RED RED CHAIR"], min_items=2)
    assert set(vocabulary.index) == {"red", "mug"}  # "red" twice in one title counts once there
    assert vocabulary.of("Red mug, red!") == sorted({vocabulary.index["red"], vocabulary.index["mug"]})
    assert vocabulary.of("green sofa") == []


def test_with_title_words_appends_after_the_catalog_attributes() -> None:
    split = ProtocolSplit(
        name="t", unit="basket", item_ids=list("abc"), users=["u"], units=[[[0], [1], [2]]],
        item_text=["RED MUG", "BLUE MUG", "LAMP"], item_attributes=[[0], [1], []], n_attributes=2,
    )
    with_words, vocabulary = with_title_words(split)
    assert vocabulary is not None and set(vocabulary.index) == {"mug"}
    mug = 2 + vocabulary.index["mug"]
    assert with_words.n_attributes == 3
    assert with_words.item_attributes == [[0, mug], [1, mug], []]
    assert split.item_attributes == [[0], [1], []]  # the input is not changed


def test_a_catalog_without_text_or_shared_words_is_unchanged() -> None:
    no_text = ProtocolSplit(name="t", unit="item", item_ids=list("ab"), users=["u"], units=[[[0], [1]]])
    assert with_title_words(no_text) == (no_text, None)
    unique = ProtocolSplit(
        name="t", unit="item", item_ids=list("ab"), users=["u"], units=[[[0], [1]]], item_text=["MUG", "LAMP"]
    )
    assert with_title_words(unique) == (unique, None)
