"""Explanations: one short reason per recommended item, built only from evidence about the user.

A reason names its evidence (a real history item close to the candidate, the user's stated
interest, their interest group, their value segment, exploration, popularity), and is written in
the language of the item's text (English, German, French or Spanish, guessed from the title's
function words; English when unsure).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from inference.profiles import RecentItem
from inference.schemas import EventType

EVIDENCE_SIMILARITY = 0.5
"""Cosine above which a history item (or an interest group's centroid) is cited for a candidate."""

_FUNCTION_WORDS = {
    "de": {"der", "die", "das", "und", "mit", "für", "aus", "ein", "eine", "von", "zum", "zur"},
    "fr": {"le", "la", "les", "et", "avec", "pour", "des", "du", "une", "en", "au", "aux"},
    "es": {"el", "la", "los", "las", "y", "con", "para", "del", "una", "un", "por"},
    "en": {"the", "and", "with", "for", "of", "set", "in", "a", "an", "to", "on"},
}

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "history": 'because you {verb} "{title}"',
        "explore": "something new to explore: {topic}",
        "stated": "matches the interests you told us about",
        "group": 'popular with shoppers who like "{group}", like you',
        "segment": "popular with our {segment} customers",
        "recent": "close to your recent activity",
        "popular": "popular with shoppers right now",
        "new": "new in the catalog",
        "purchase": "bought", "add_to_cart": "added", "view": "viewed", "other": "looked at",
    },
    "de": {
        "history": 'weil Sie „{title}“ {verb} haben',
        "explore": "etwas Neues zum Entdecken: {topic}",
        "stated": "passt zu den Interessen, die Sie uns genannt haben",
        "group": "beliebt bei Kunden, die wie Sie „{group}“ mögen",
        "segment": "beliebt bei unseren Kunden im Segment „{segment}“",
        "recent": "passt zu Ihren letzten Aktivitäten",
        "popular": "gerade beliebt",
        "new": "neu im Sortiment",
        "purchase": "gekauft", "add_to_cart": "in den Warenkorb gelegt", "view": "angesehen",
        "other": "angesehen",
    },
    "fr": {
        "history": "parce que vous avez {verb} « {title} »",
        "explore": "une nouveauté à découvrir : {topic}",
        "stated": "correspond aux centres d'intérêt que vous nous avez indiqués",
        "group": "apprécié des clients qui, comme vous, aiment « {group} »",
        "segment": "apprécié de nos clients du segment « {segment} »",
        "recent": "proche de votre activité récente",
        "popular": "populaire en ce moment",
        "new": "nouveau dans le catalogue",
        "purchase": "acheté", "add_to_cart": "ajouté au panier", "view": "consulté", "other": "consulté",
    },
    "es": {
        "history": "porque {verb} «{title}»",
        "explore": "algo nuevo para descubrir: {topic}",
        "stated": "coincide con los intereses que nos contaste",
        "group": "popular entre clientes a los que, como a ti, les gusta «{group}»",
        "segment": "popular entre nuestros clientes del segmento «{segment}»",
        "recent": "cerca de tu actividad reciente",
        "popular": "popular ahora mismo",
        "new": "nuevo en el catálogo",
        "purchase": "compraste", "add_to_cart": "añadiste", "view": "viste", "other": "miraste",
    },
}

_VERB_KEY = {
    EventType.purchase: "purchase",
    EventType.add_to_cart: "add_to_cart",
    EventType.click: "view",
    EventType.view: "view",
}

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@lru_cache(maxsize=65_536)
def detect_language(text: str) -> str:
    """The template language for an item text: the one whose function words it uses most."""
    words = _WORD.findall(text.lower())
    best, best_hits = "en", 0
    for lang, vocabulary in _FUNCTION_WORDS.items():
        hits = sum(w in vocabulary for w in words)
        if hits > best_hits:
            best, best_hits = lang, hits
    return best


@dataclass(frozen=True)
class Evidence:
    """What a reason may cite: facts about this user, nothing else."""

    recent: Sequence[RecentItem]
    vectors: Mapping[str, np.ndarray]
    titles: Mapping[str, str]
    stated_interest: bool
    group_name: str | None = None
    group_centroid: np.ndarray | None = None
    segment: str | None = None
    segment_popular: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def history(self) -> tuple[list[str], np.ndarray | None]:
        """The recent items that have a vector, in order, and those vectors as rows: one
        matrix-vector product per candidate instead of a dot product per recent item."""
        ids = [r.item_id for r in self.recent if r.item_id in self.vectors]
        return ids, np.stack([self.vectors[i] for i in ids]) if ids else None


def explain(item_id: str, title: str, vector: np.ndarray | None, evidence: Evidence, popularity: float,
            explored_topic: str | None = None) -> str:
    t = TEMPLATES[detect_language(title)]
    if explored_topic is not None:
        return t["explore"].format(topic=explored_topic)
    best_id, best_sim = None, EVIDENCE_SIMILARITY
    history_ids, history = evidence.history
    if vector is not None and history is not None:
        for recent_id, sim in zip(history_ids, (history @ vector).tolist()):
            if recent_id == item_id:
                continue
            if sim > best_sim or (best_id is not None and sim == best_sim):
                best_id, best_sim = recent_id, sim
    if best_id is not None:
        kind = next(r.type for r in reversed(evidence.recent) if r.item_id == best_id)
        verb = t[_VERB_KEY.get(kind, "other")]
        return t["history"].format(verb=verb, title=_short(evidence.titles.get(best_id, best_id)))
    if evidence.stated_interest:
        return t["stated"]
    if (evidence.group_name is not None and evidence.group_centroid is not None and vector is not None
            and float(np.dot(evidence.group_centroid, vector)) >= EVIDENCE_SIMILARITY):
        return t["group"].format(group=evidence.group_name)
    if evidence.segment is not None and item_id in evidence.segment_popular:
        return t["segment"].format(segment=evidence.segment.replace("_", " "))
    if evidence.recent:
        return t["recent"]
    if popularity > 0:
        return t["popular"]
    return t["new"]


def _short(title: str, limit: int = 60) -> str:
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"
