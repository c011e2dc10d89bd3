"""Title words: the learned item attributes that place a new item by its title.

The event encoder's item tower (training/model.py) gives each word found in several titles its
own vector; an item's content vector includes the mean of its known words' vectors. The worker
places an item the tower never saw the same way, so training and serving split titles alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOT_WORD = re.compile(r"[^0-9a-z]+")


def words(text: str) -> list[str]:
    """Lower-case words of ``text``; numbers alone ("3", "12") say nothing and are left out."""
    return [w for w in _NOT_WORD.split(text.lower()) if w and not w.isdigit()]


@dataclass(frozen=True)
class TitleWords:
    """A vocabulary of title words and its attribute indices, which start at ``offset`` (after
    the catalog's own attributes)."""

    index: dict[str, int]
    offset: int

    def of(self, text: str) -> list[int]:
        """Attribute indices of the known words of ``text`` (each once, sorted)."""
        return sorted({self.index[w] + self.offset for w in words(text) if w in self.index})

    def __len__(self) -> int:
        return len(self.index)
