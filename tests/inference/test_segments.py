import pytest

from inference.profiles import Rfm
from inference.segments import SEGMENTS, RfmCutoffs, score, segment_of

DAY = 86_400.0
NOW = 1000 * DAY


def rfm(days_ago, purchases, monetary):
    return Rfm(first_ts=0.0, last_purchase_ts=NOW - days_ago * DAY, purchases=purchases, monetary=monetary)


def test_no_purchase_is_a_prospect():
    assert score(Rfm(first_ts=0.0), NOW).segment == "prospect"


@pytest.mark.parametrize("days,purchases,monetary,expected", [
    (1, 200, 5000, "champions"),
    (40, 60, 1000, "loyal"),
    (2, 1, 10, "new"),
    (10, 20, 300, "potential_loyalist"),
    (50, 2, 30, "promising"),
    (300, 200, 9000, "cant_lose"),
    (100, 60, 400, "at_risk"),
    (365, 2, 20, "hibernating"),
])
def test_rfm_maps_to_named_segments(days, purchases, monetary, expected):
    result = score(rfm(days, purchases, monetary), NOW)
    assert result.segment == expected and result.segment in SEGMENTS
    assert 1 <= result.r <= 5 and 1 <= result.f <= 5 and 1 <= result.m <= 5


def test_scores_move_the_right_way_at_the_cutoffs():
    cut = RfmCutoffs(recency_days=(1, 2, 3, 4), frequency=(2, 3, 4, 5), monetary=(10, 20, 30, 40))
    assert score(rfm(0, 1, 5), NOW, cut).r == 5 and score(rfm(4, 1, 5), NOW, cut).r == 1
    assert score(rfm(0, 5, 5), NOW, cut).f == 5 and score(rfm(0, 1, 5), NOW, cut).f == 1
    assert score(rfm(0, 1, 40), NOW, cut).m == 5


def test_time_alone_moves_a_champion_towards_risk():
    champion = rfm(0, 200, 9000)
    assert score(champion, NOW).segment == "champions"
    assert score(champion, NOW + 100 * DAY).segment == "cant_lose"
    assert segment_of(1, 1, 1) == "hibernating"
