"""The words of item titles as learned item attributes.

A new item's vector comes from its content alone. A linear projection of the frozen title
embedding places it only roughly: the encoder was not trained on this catalog, and what ties a
wholesaler's items together is often one word ("RETROSPOT", "PANTRY", "REGENCY") that the
embedding blurs with the rest of the title. Giving each title word its own learned vector (the
mean of them joins the item's content vector, like the S3-Rec attributes) lets training say what
each word means here; a new item whose title shares words with trained ones lands beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from inference.title_words import TitleWords, words
from training.split import ProtocolSplit


def title_words(titles: Sequence[str], *, min_items: int = 2, offset: int = 0) -> TitleWords:
    """The words found in at least ``min_items`` titles: a word of one item only cannot tie it
    to any other, and would only let training memorise that item."""
    counts = Counter(w for title in titles for w in set(words(title)))
    vocabulary = sorted(w for w, n in counts.items() if n >= min_items)
    return TitleWords({w: i for i, w in enumerate(vocabulary)}, offset)


def with_title_words(split: ProtocolSplit, *, min_items: int = 2) -> tuple[ProtocolSplit, TitleWords | None]:
    """``split`` with its item titles' words added to the item attributes (after any the catalog
    has), and the vocabulary; unchanged (and None) for a catalog without text."""
    if split.item_text is None:
        return split, None
    vocabulary = title_words(split.item_text, min_items=min_items, offset=split.n_attributes)
    if len(vocabulary) == 0:
        return split, None
    own = split.item_attributes or [[] for _ in split.item_ids]
    attributes = [sorted(set(a) | set(vocabulary.of(t))) for a, t in zip(own, split.item_text)]
    return replace(split, item_attributes=attributes, n_attributes=split.n_attributes + len(vocabulary)), vocabulary
