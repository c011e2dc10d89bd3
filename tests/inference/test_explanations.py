import numpy as np

from inference.explanations import Evidence, detect_language, explain
from inference.profiles import RecentItem
from inference.schemas import EventType


def unit(*xs):
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


NO_EVIDENCE = Evidence(recent=(), vectors={}, titles={}, stated_interest=False)


def test_reason_cites_the_closest_history_item_with_the_true_verb():
    evidence = Evidence(
        recent=(RecentItem("tent", EventType.purchase, 1.0), RecentItem("mug", EventType.view, 2.0)),
        vectors={"tent": unit(1, 0, 0), "mug": unit(0, 1, 0)},
        titles={"tent": "2-person tent", "mug": "Enamel mug"},
        stated_interest=True,
    )
    assert explain("stakes", "Tent stakes", unit(0.9, 0.1, 0), evidence, 0.0) == 'because you bought "2-person tent"'
    assert explain("cup", "Cup", unit(0.1, 0.9, 0), evidence, 0.0) == 'because you viewed "Enamel mug"'
    assert explain("x", "X", unit(0, 0, 1), evidence, 0.0) == "matches the interests you told us about"


def test_exploration_is_said_and_wins_over_other_evidence():
    evidence = Evidence(recent=(RecentItem("a", EventType.purchase, 1.0),), vectors={"a": unit(1, 0)},
                        titles={"a": "A"}, stated_interest=True)
    assert explain("b", "B", unit(1, 0), evidence, 0.5, explored_topic="teacup · saucer") == \
        "something new to explore: teacup · saucer"


def test_group_reason_needs_the_item_close_to_the_users_group():
    evidence = Evidence(recent=(), vectors={}, titles={}, stated_interest=False,
                        group_name="candles · holder", group_centroid=unit(1, 0))
    assert explain("c", "Candle", unit(0.95, 0.05), evidence, 0.0) == \
        'popular with shoppers who like "candles · holder", like you'
    assert explain("d", "Doormat", unit(0, 1), evidence, 0.0) == "new in the catalog"


def test_segment_reason_only_for_items_popular_in_that_segment():
    evidence = Evidence(recent=(), vectors={}, titles={}, stated_interest=False, segment="at_risk",
                        segment_popular=frozenset({"p"}))
    assert explain("p", "P", unit(1, 0), evidence, 0.0) == "popular with our at risk customers"
    assert explain("q", "Q", unit(1, 0), evidence, 0.2) == "popular with shoppers right now"


def test_reason_falls_back_to_activity_popularity_or_novelty():
    recent_only = Evidence(recent=(RecentItem("a", EventType.view, 1.0),), vectors={"a": unit(1, 0)},
                           titles={"a": "A"}, stated_interest=False)
    assert explain("b", "B", unit(0, 1), recent_only, 0.0) == "close to your recent activity"
    assert explain("b", "B", unit(0, 1), NO_EVIDENCE, 0.3) == "popular with shoppers right now"
    assert explain("b", "B", unit(0, 1), NO_EVIDENCE, 0.0) == "new in the catalog"


def test_an_item_is_never_its_own_evidence():
    evidence = Evidence(recent=(RecentItem("a", EventType.purchase, 1.0),), vectors={"a": unit(1, 0)},
                        titles={"a": "A"}, stated_interest=False)
    assert explain("a", "A", unit(1, 0), evidence, 0.0) == "close to your recent activity"


def test_reasons_follow_the_language_of_the_item_text():
    assert detect_language("Tasse aus Porzellan mit Untertasse und der Blume") == "de"
    assert detect_language("Bol en céramique pour le petit déjeuner avec des fleurs") == "fr"
    assert detect_language("Taza de cerámica con plato para el té") == "es"
    assert detect_language("REGENCY TEACUP AND SAUCER") == "en"
    assert detect_language("12345") == "en"
    evidence = Evidence(recent=(RecentItem("a", EventType.purchase, 1.0),), vectors={"a": unit(1, 0)},
                        titles={"a": "Kerze aus Wachs"}, stated_interest=False)
    assert explain("b", "Kerzenhalter aus Glas für die Kerze", unit(1, 0), evidence, 0.0) == \
        "weil Sie „Kerze aus Wachs“ gekauft haben"
