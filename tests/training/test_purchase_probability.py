"""Tests for training/purchase_probability.py: cutoffs, metrics, the fit and the command."""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
import pandas as pd
import pytest

from inference.profiles import Profile, ProfileParams, Rfm, apply_event
from inference.purchase_probability import FEATURE_NAMES, PurchaseModel, features, load_purchase_model
from inference.schemas import EventType
from training.purchase_probability import (
    add_arguments,
    auc,
    brier,
    buyers_between,
    default_cutoffs,
    epoch_seconds,
    evaluate,
    expected_calibration_error,
    fit_logistic,
    fit_purchase_model,
    format_table,
    log_loss,
    reliability,
    rfm_at,
    run,
    snapshot,
)

DAY = 86_400.0
START = pd.Timestamp("2011-01-01", tz="UTC")


def log(rows) -> pd.DataFrame:
    """A purchase log from (user, day offset, quantity, price) rows, in the RetailLog layout."""
    frame = pd.DataFrame(
        {
            "user_id": [str(u) for u, *_ in rows],
            "item_id": [f"i{k % 7}" for k in range(len(rows))],
            "invoice": [f"{u}-{d}" for u, d, *_ in rows],
            "ts": [START + pd.Timedelta(days=d) for _, d, *_ in rows],
            "quantity": [q for *_, q, _ in rows],
            "price": [float(p) for *_, p in rows],
            "country": "United Kingdom",
        }
    )
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def day(d: float) -> float:
    return float((START + pd.Timedelta(days=d) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1))


def synthetic(n_users=240, days=150, seed=0) -> pd.DataFrame:
    """Each customer buys every ~4 days while active, then stops for good: recency says it all."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        begin = rng.uniform(0, days / 2)
        end = rng.uniform(begin + 5, days + 60)
        t = begin
        while t < min(end, days):
            rows.append((u, round(t, 3), int(rng.integers(1, 10)), float(rng.uniform(1, 5))))
            t += rng.exponential(4.0)
    return log(rows)


# --------------------------------------------------------------------------------------------
# Metrics on known cases


def test_auc_on_a_known_case():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.2, 0.9]) == 1.0
    assert auc([1, 0], [0.2, 0.9]) == 0.0


def test_auc_counts_ties_as_one_half():
    # pairs (pos, neg): (.5,.5) tie, (.5,.2) win, (.9,.5) win, (.9,.2) win -> 3.5 / 4
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert auc([0, 1, 1, 0, 1], [0.3] * 5) == pytest.approx(0.5)


def test_auc_equals_the_pairwise_definition_on_tied_random_scores():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 6, 300) / 5.0  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = np.mean([(a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)])
    assert auc(y, s) == pytest.approx(pairwise)


def test_auc_is_undefined_with_one_class():
    assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_brier_and_log_loss_on_known_values():
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert np.isfinite(log_loss([1, 0], [0.0, 1.0]))  # clipped, not infinite


def test_reliability_table_and_ece_on_a_known_case():
    p = [0.05, 0.05, 0.15, 0.95, 1.0, 0.1]
    y = [0, 1, 0, 1, 1, 1]
    table = reliability(y, p)
    assert len(table) == 10
    assert [r["count"] for r in table] == [2, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table[0]["mean_predicted"] == pytest.approx(0.05) and table[0]["observed_rate"] == pytest.approx(0.5)
    assert table[1]["mean_predicted"] == pytest.approx(0.125) and table[1]["observed_rate"] == pytest.approx(0.5)
    assert table[9]["mean_predicted"] == pytest.approx(0.975) and table[9]["observed_rate"] == 1.0
    assert table[4]["mean_predicted"] is None and table[4]["observed_rate"] is None
    assert (table[0]["lo"], table[0]["hi"], table[9]["hi"]) == (0.0, 0.1, 1.0)
    assert expected_calibration_error(table) == pytest.approx((2 * 0.45 + 2 * 0.375 + 2 * 0.025) / 6)


def test_a_perfectly_calibrated_predictor_has_near_zero_ece():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 200_000)
    y = rng.uniform(0, 1, p.size) < p
    assert evaluate(y, p)["ece"] < 0.01
    assert evaluate(y, np.full(p.size, 0.9))["ece"] > 0.3


# --------------------------------------------------------------------------------------------
# Cutoffs: what is a feature, what is a label


def test_rfm_at_aggregates_lines_up_to_and_including_the_cutoff():
    purchases = log([("a", 1, 2, 3.0), ("a", 5, 1, 10.0), ("a", 10, 4, 1.0), ("b", 10, 1, 1.0), ("c", 11, 1, 1.0)])
    state = rfm_at(purchases, day(10))
    assert set(state) == {"a", "b"}  # c is first seen after the cutoff
    assert state["a"] == Rfm(first_ts=day(1), last_purchase_ts=day(10), purchases=3, monetary=2 * 3.0 + 10.0 + 4 * 1.0)
    assert state["b"].purchases == 1


def test_a_purchase_exactly_at_the_cutoff_is_a_feature_and_never_a_label():
    purchases = log([("a", 1, 1, 1.0), ("a", 10, 1, 1.0), ("b", 1, 1, 1.0), ("b", 40, 1, 1.0), ("c", 1, 1, 1.0),
                     ("c", 40.001, 1, 1.0)])
    snap = snapshot(purchases, day(10), horizon_days=30)
    y = dict(zip(snap.user_ids, snap.y))
    assert y == {"a": 0, "b": 1, "c": 0}  # a bought at T (feature); b at T+N (label); c just after T+N
    x = dict(zip(snap.user_ids, snap.x))
    assert x["a"][FEATURE_NAMES.index("log1p_recency_days")] == 0.0
    assert x["a"][FEATURE_NAMES.index("log1p_frequency")] == pytest.approx(np.log1p(2))
    assert buyers_between(purchases, day(10), day(40)) == {"b"}


def test_features_ignore_the_future_and_labels_ignore_the_past():
    purchases = synthetic(n_users=60, days=100, seed=5)
    cutoff = day(50)
    full = snapshot(purchases, cutoff, 20)
    past_only = snapshot(purchases[epoch_seconds(purchases["ts"]) <= cutoff], cutoff, 20)
    assert full.user_ids == past_only.user_ids
    np.testing.assert_array_equal(full.x, past_only.x)
    assert past_only.y.sum() == 0  # with no future data, nobody can be a buyer
    assert full.y.sum() > 0
    # Doubling every past purchase changes features but no label.
    doubled = pd.concat([purchases, purchases[epoch_seconds(purchases["ts"]) <= cutoff]]).sort_values("ts")
    again = snapshot(doubled, cutoff, 20)
    np.testing.assert_array_equal(again.y, full.y)
    assert not np.array_equal(again.x, full.x)


def test_rfm_at_equals_folding_the_events_through_the_worker_profile_maths():
    purchases = synthetic(n_users=15, days=60, seed=2)
    cutoff = day(40)
    profiles: dict[str, Profile] = {}
    for k, row in enumerate(purchases.itertuples(index=False)):
        ts = float((row.ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1))
        if ts > cutoff:
            continue
        prof = profiles.get(row.user_id, Profile(user_id=row.user_id))
        profiles[row.user_id] = apply_event(
            prof, event_id=f"e{k}", type=EventType.purchase, ts=ts, item_id=row.item_id, vector=None, category=None,
            session_id=row.invoice, quantity=int(row.quantity), price=float(row.price), params=ProfileParams(),
        )
    state = rfm_at(purchases, cutoff)
    assert set(state) == set(profiles)
    for user, prof in profiles.items():
        got, want = state[user], prof.rfm
        assert (got.first_ts, got.last_purchase_ts, got.purchases) == (want.first_ts, want.last_purchase_ts,
                                                                       want.purchases)
        assert got.monetary == pytest.approx(want.monetary)
        np.testing.assert_allclose(features(got, cutoff), features(want, cutoff))


def test_default_cutoffs_are_last_purchase_minus_one_and_two_horizons():
    purchases = log([("a", 0, 1, 1.0), ("b", 100, 1, 1.0)])
    t1, t2 = default_cutoffs(purchases, 30)
    assert (t2, t1) == (day(70), day(40))
    assert default_cutoffs(purchases, 30, validation_cutoff=day(80)) == (day(50), day(80))
    with pytest.raises(ValueError, match="too short"):
        default_cutoffs(purchases, 60)


# --------------------------------------------------------------------------------------------
# Fitting


def test_fit_logistic_reaches_the_penalised_optimum():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 3))
    y = (rng.uniform(size=500) < 1 / (1 + np.exp(-(z @ [1.5, -2.0, 0.0] + 0.3)))).astype(float)
    w, b = fit_logistic(z, y, l2=2.0)
    p = 1 / (1 + np.exp(-(z @ w + b)))
    np.testing.assert_allclose(z.T @ (p - y) + 2.0 * w, 0.0, atol=1e-6)
    assert abs(np.sum(p - y)) < 1e-6  # unpenalised intercept: mean prediction = base rate
    assert w[0] > 1.0 and w[1] < -1.5 and abs(w[2]) < 0.3


def test_fit_logistic_stays_finite_on_separable_data():
    z = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    w, b = fit_logistic(z, np.array([0, 0, 1, 1]), l2=0.5)
    assert np.all(np.isfinite(w)) and np.isfinite(b) and w[0] > 0


def test_training_on_an_obvious_synthetic_signal():
    purchases = synthetic()
    model, result = fit_purchase_model(purchases, horizon_days=20)
    m = result["metrics"]
    assert m["model"]["auc"] > 0.8
    assert m["model"]["auc"] > m["baseline_base_rate"]["auc"] == 0.5
    assert m["model"]["brier"] < m["baseline_base_rate"]["brier"]
    assert model.coefficients[FEATURE_NAMES.index("log1p_recency_days")] < 0
    t = result["training"]
    assert t["validation_cutoff"] > t["train_cutoff"] and t["train_label_end"] == t["validation_cutoff"]
    table = m["model"]["reliability"]
    assert len(table) == 10 and sum(r["count"] for r in table) == t["n_validation"]
    assert PurchaseModel.from_json(model.to_json()) == model
    assert model.metrics == m
    assert "rfm logistic" in format_table(result) and "recency only" in format_table(result)


def test_fit_refuses_a_window_with_a_single_class():
    purchases = log([(u, d, 1, 1.0) for u in range(5) for d in range(0, 100, 2)])  # everyone always buys
    with pytest.raises(ValueError, match="both buyers and non-buyers"):
        fit_purchase_model(purchases, horizon_days=20)


# --------------------------------------------------------------------------------------------
# The command


def uci_file(path, purchases: pd.DataFrame):
    """Write a log in the raw UCI Online Retail layout (UK wall-clock InvoiceDate)."""
    local = purchases["ts"].dt.tz_convert("Europe/London").dt.strftime("%Y-%m-%d %H:%M:%S")
    raw = pd.DataFrame(
        {
            "InvoiceNo": purchases["invoice"].str.replace("-", "").str.replace(".", ""),
            "StockCode": "1000" + purchases["item_id"].str[1:],
            "Description": "A PRODUCT",
            "Quantity": purchases["quantity"],
            "InvoiceDate": local,
            "UnitPrice": purchases["price"],
            "CustomerID": purchases["user_id"].astype(float) + 12000,
            "Country": "United Kingdom",
        }
    )
    raw.to_csv(path, index=False, compression="gzip")


def parse(argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_command_writes_model_report_and_prints_json(tmp_path, capsys):
    data = tmp_path / "retail.csv.gz"
    uci_file(data, synthetic(n_users=120, seed=4))
    out = tmp_path / "models"
    assert run(parse(["--path", str(data), "--horizon-days", "20", "--out", str(out), "--json"])) == 0
    printed = json.loads(capsys.readouterr().out)
    model = load_purchase_model(out / "purchase_probability.json")
    assert printed["version"] == model.version and model.horizon_days == 20
    assert printed["metrics"]["model"]["auc"] == model.metrics["model"]["auc"] > 0.7
    assert (out / "purchase_probability.md").read_text().count("| rfm logistic |") == 1
    assert (out / "purchase_probability_calibration.png").stat().st_size > 1000


def test_command_accepts_a_json_file_as_out_and_prints_a_table(tmp_path, capsys):
    data = tmp_path / "retail.csv.gz"
    uci_file(data, synthetic(n_users=120, seed=4))
    target = tmp_path / "deep" / "pp.json"
    assert run(parse(["--path", str(data), "--horizon-days", "20", "--out", str(target)])) == 0
    assert "AUC" in capsys.readouterr().out
    assert load_purchase_model(target).horizon_days == 20
    assert (target.parent / "pp.md").is_file()


def test_command_reports_unusable_input_without_a_traceback(tmp_path, capsys):
    assert run(parse(["--path", str(tmp_path / "absent.parquet"), "--out", str(tmp_path)])) == 2
    assert "streamrec purchase-model" in capsys.readouterr().err
    data = tmp_path / "retail.csv.gz"
    uci_file(data, synthetic(n_users=30, days=40, seed=1))
    assert run(parse(["--path", str(data), "--horizon-days", "30", "--out", str(tmp_path)])) == 2
    assert "too short" in capsys.readouterr().err
    assert not (tmp_path / "purchase_probability.json").exists()
