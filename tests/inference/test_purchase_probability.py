"""Tests for inference/purchase_probability.py: features, scoring, the model file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from inference.profiles import Rfm
from inference.purchase_probability import (
    DAY_S,
    DEFAULT_MODEL_PATH,
    FEATURE_NAMES,
    PurchaseModel,
    PurchaseModelError,
    features,
    load_purchase_model,
)

NOW = 1_700_000_000.0
R, F, M, T, RATE = range(5)


def hand_model(**overrides) -> PurchaseModel:
    """Recent (negative recency weight), frequent and big spenders score higher; easy numbers."""
    fields = dict(
        feature_names=FEATURE_NAMES,
        coefficients=(-1.0, 0.8, 0.5, 0.1, 0.3),
        intercept=-0.5,
        means=(3.0, 2.0, 5.0, 4.0, 1.0),
        scales=(1.0, 1.0, 2.0, 1.0, 0.5),
        horizon_days=30.0,
        version="test-1",
        training={"train_cutoff": "2011-10-10T00:00:00+00:00"},
        metrics={"model": {"auc": 0.7}},
        l2=1.0,
    )
    fields.update(overrides)
    return PurchaseModel(**fields)


def buyer(recency_days=5.0, purchases=10, monetary=200.0, tenure_days=100.0) -> Rfm:
    return Rfm(first_ts=NOW - tenure_days * DAY_S, last_purchase_ts=NOW - recency_days * DAY_S,
               purchases=purchases, monetary=monetary)


def test_features_of_a_buyer_are_the_documented_log1p_quantities():
    x = features(buyer(recency_days=9.0, purchases=20, monetary=99.0, tenure_days=60.0), NOW)
    assert x.shape == (len(FEATURE_NAMES),)
    assert x[R] == pytest.approx(math.log1p(9.0))
    assert x[F] == pytest.approx(math.log1p(20))
    assert x[M] == pytest.approx(math.log1p(99.0))
    assert x[T] == pytest.approx(math.log1p(60.0))
    assert x[RATE] == pytest.approx(math.log1p(20 / 2.0))  # 60 days = 2 months


def test_purchase_rate_floors_tenure_at_one_month():
    x = features(buyer(recency_days=0.0, purchases=6, tenure_days=3.0), NOW)
    assert x[RATE] == pytest.approx(math.log1p(6.0))


def test_user_without_purchase_has_zero_frequency_and_spend_and_recency_equal_to_tenure():
    x = features(Rfm(first_ts=NOW - 40 * DAY_S), NOW)
    assert x[F] == 0.0 and x[M] == 0.0 and x[RATE] == 0.0
    assert x[R] == pytest.approx(x[T]) and x[T] == pytest.approx(math.log1p(40.0))
    assert np.all(features(Rfm(), NOW) == 0.0)


def test_time_running_backwards_counts_as_no_time():
    x = features(Rfm(first_ts=NOW + 50, last_purchase_ts=NOW + 50, purchases=1, monetary=3.0), NOW)
    assert x[R] == 0.0 and x[T] == 0.0
    assert np.all(np.isfinite(x))


def test_predict_is_a_probability_even_for_extreme_states():
    model = hand_model()
    for rfm in (Rfm(), buyer(recency_days=0.0, purchases=10**9, monetary=1e15), buyer(recency_days=1e6, purchases=1)):
        p = model.predict(rfm, NOW)
        assert 0.0 <= p <= 1.0 and math.isfinite(p)


def test_more_recent_buyers_score_higher():
    model = hand_model()
    scores = [model.predict(buyer(recency_days=d), NOW) for d in (1.0, 7.0, 30.0, 90.0)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1] + 0.1


def test_more_frequent_buyers_score_higher():
    model = hand_model()
    scores = [model.predict(buyer(purchases=n), NOW) for n in (1, 5, 20, 100)]
    assert scores == sorted(scores) and scores[-1] > scores[0] + 0.1


def test_a_user_who_never_bought_scores_below_a_buyer_with_the_same_tenure():
    model = hand_model()
    never = Rfm(first_ts=NOW - 50 * DAY_S)
    once_at_arrival = Rfm(first_ts=NOW - 50 * DAY_S, last_purchase_ts=NOW - 50 * DAY_S, purchases=1, monetary=5.0)
    assert model.predict(never, NOW) < model.predict(once_at_arrival, NOW)


def test_predict_matches_the_logistic_formula():
    model = hand_model()
    rfm = buyer()
    x = features(rfm, NOW)
    z = sum(c * (v - m) / s for c, v, m, s in zip(model.coefficients, x, model.means, model.scales)) + model.intercept
    assert model.predict(rfm, NOW) == pytest.approx(1 / (1 + math.exp(-z)))


def test_json_round_trip_keeps_everything():
    model = hand_model()
    again = PurchaseModel.from_json(model.to_json())
    assert again == model
    assert again.training == model.training and again.metrics == model.metrics
    assert again.predict(buyer(), NOW) == model.predict(buyer(), NOW)


def test_load_reads_a_written_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(hand_model().to_json())
    assert load_purchase_model(path) == hand_model()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"kind": "something_else"}), "kind"),
        ("MUTATE:schema=99", "schema"),
        ("MUTATE:coefficients=[1.0, 2.0]", "'coefficients' has 2 values"),
        ("MUTATE:scales=[1.0, 1.0, 0.0, 1.0, 1.0]", "'scales' must all be > 0"),
        ("MUTATE:feature_names=[\"a\", \"b\", \"c\", \"d\", \"e\"]", "differ from this code"),
        ("MUTATE:intercept=\"high\"", "malformed"),
        ("MUTATE:horizon_days=0", "horizon_days"),
        ("MUTATE:coefficients=[NaN, 1.0, 1.0, 1.0, 1.0]", "non-finite"),
        ("DROP:means", "missing fields ['means']"),
    ],
)
def test_bad_model_file_is_a_clear_error_naming_the_file(tmp_path, content, message):
    if content.startswith(("MUTATE:", "DROP:")):
        data = hand_model().to_dict()
        op, _, rest = content.partition(":")
        if op == "DROP":
            del data[rest]
        else:
            key, _, value = rest.partition("=")
            data[key] = json.loads(value)
        content = json.dumps(data)
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PurchaseModelError) as err:
        load_purchase_model(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) and "streamrec purchase-model" in str(err.value)


def test_binary_garbage_and_missing_files_are_clear_errors(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PurchaseModelError, match="not UTF-8"):
        load_purchase_model(path)
    with pytest.raises(FileNotFoundError, match="streamrec purchase-model"):
        load_purchase_model(tmp_path / "absent.json")


def test_the_shipped_model_loads_and_ranks_like_rfm():
    model = load_purchase_model()
    assert model == load_purchase_model(DEFAULT_MODEL_PATH)
    assert model.horizon_days == 30.0
    assert model.training["validation_cutoff"] > model.training["train_cutoff"]
    assert model.metrics["model"]["auc"] > model.metrics["baseline_base_rate"]["auc"]
    assert model.predict(buyer(recency_days=2.0, purchases=80), NOW) > model.predict(
        buyer(recency_days=200.0, purchases=2, tenure_days=250.0), NOW
    )
