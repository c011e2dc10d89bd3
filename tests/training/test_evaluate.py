"""`streamrec evaluate` end to end on tiny synthetic files (no RecBole peer: it needs its own venv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stream.cli import main
from training.evaluate import (
    SIBLING_PLACEMENTS,
    EvaluateOptions,
    first_basket_texts,
    format_table,
    streamrec_config,
)
from training.split import ProtocolSplit

METRICS = {"hr@10", "ndcg@10", "mrr", "coverage", "train_s", "eval_s"}


def write_sequences(path: Path, n_users: int = 80, n_items: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, n_users + 1):
        start, length = int(rng.integers(n_items)), int(rng.integers(5, 9))
        items = [(start + 2 * s) % n_items + 1 for s in range(length)]
        lines.append(" ".join(map(str, [user, *items])))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["evaluate", *args, "--json", "--threads", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "it/s" not in captured.err  # --quiet: no progress bar from any stage
    return json.loads(captured.out)


def test_evaluate_sequences_json_schema_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sequences(tmp_path / "Toy.txt")
    report = tmp_path / "report"

    result = run_json(
        capsys, "--format", "sequences", "--path", str(path), "--baselines", "popularity,cooccurrence",
        "--epochs", "2", "--report", str(report),
    )

    assert set(result) >= {"dataset", "protocol", "results"}
    assert set(result["results"]) == {"popularity", "cooccurrence", "streamrec"}
    for metrics in result["results"].values():
        assert METRICS <= set(metrics)
        assert 0.0 <= metrics["hr@10"] <= 1.0 and 0.0 <= metrics["ndcg@10"] <= metrics["hr@10"] + 1e-9
    assert result["results"]["streamrec"]["epochs"] <= 2
    assert result["protocol"]["exclude_seen"] is True and result["protocol"]["unit"] == "item"
    assert result["dataset"]["users"] == 80
    assert "cold_start" not in result  # no item text in S3-Rec files
    assert (report / "report.md").read_text().startswith("# Offline evaluation")
    assert (report / "metrics.png").stat().st_size > 1000
    assert json.loads((report / "result.json").read_text())["results"].keys() == result["results"].keys()


def test_evaluate_baselines_none_and_max_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sequences(tmp_path / "Toy.txt")
    result = run_json(
        capsys, "--format", "sequences", "--path", str(path), "--baselines", "none", "--epochs", "1",
        "--max-users", "40", "--include-seen",
    )
    assert set(result["results"]) == {"streamrec"}
    assert result["dataset"]["users"] == 40
    assert result["protocol"]["exclude_seen"] is False


def test_unknown_baseline_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--format", "sequences", "--path", str(tmp_path / "x.txt"), "--baselines", "bogus"])


def write_retail(path: Path, n_users: int = 40, seed: int = 0) -> Path:
    """Users buying 3-5 invoices of three themed items (mugs or lamps), every fifth user only 2 (a
    new customer for the text-only protocol): text tells the themes apart. No user buys an item
    twice, so the worker's window of recent items (each item once) holds their whole past."""
    rng = np.random.default_rng(seed)
    themes = {0: [f"RED MUG {i}" for i in range(15)], 1: [f"GARDEN LAMP {i}" for i in range(15)]}
    rows, invoice = [], 500000
    for user in range(n_users):
        theme, bought = user % 2, rng.permutation(15)
        for b in range(2 if user % 5 == 4 else int(rng.integers(3, 6))):
            invoice += 1
            day = pd.Timestamp("2011-01-03") + pd.Timedelta(days=7 * b + user % 5)
            for item in bought[3 * b:3 * b + 3]:
                rows.append({
                    "InvoiceNo": str(invoice), "StockCode": f"{20000 + 100 * theme + int(item)}",
                    "Description": themes[theme][int(item)], "Quantity": 1,
                    "InvoiceDate": f"{day:%Y-%m-%d} 10:00:00", "UnitPrice": 2.5,
                    "CustomerID": float(12000 + user), "Country": "United Kingdom",
                })
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_evaluate_online_retail_with_cold_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMREC_ENCODER_ONNX_DIR", str(tiny_onnx_dir))
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "state"))
    path = write_retail(tmp_path / "retail.csv")

    result = run_json(
        capsys, "--format", "online-retail", "--path", str(path), "--baselines", "popularity",
        "--epochs", "2", "--cold-fraction", "0.3", "--report", str(tmp_path / "report"),
        "--export-tower", str(tmp_path / "tower"),
    )

    assert result["protocol"]["unit"] == "basket"
    # Baskets have times: fresh popularity, alone and blended into streamrec's scores, is scored too.
    assert set(result["results"]) == {"popularity", "streamrec", "fresh_popularity", "streamrec+fresh_popularity",
                                      "worker_event_encoder"}
    # The worker's window holds every user's whole past here (<= 15 items, none bought twice):
    # serving the exported model through the engine ranks as the model does.
    served, model = result["results"]["worker_event_encoder"], result["results"]["streamrec"]
    for metric in ("hr@10", "ndcg@10", "mrr"):
        assert served[metric] == pytest.approx(model[metric], abs=1e-3)
    assert json.loads((tmp_path / "tower" / "tower.json").read_text())["item_ids"]
    blended = result["results"]["streamrec+fresh_popularity"]
    assert blended["half_life_days"] in (3.0, 7.0, 30.0) and blended["weight"] >= 0
    assert METRICS <= set(blended) and METRICS <= set(result["results"]["fresh_popularity"])
    # Picked on validation: at least as good there as streamrec alone.
    assert blended["validation_ndcg@10"] >= blended["validation_ndcg@10_without"] - 1e-9
    cold = result["cold_start"]
    assert cold["new_items"]["held_out_items"] > 0
    assert set(cold["new_items"]["median_vector_norm"]) == {"held_out", "trained"}
    assert cold["new_items"]["median_vector_norm"]["held_out"] > 0
    assert set(cold["new_items"]["results"]) == {
        "streamrec", "popularity", "streamrec_warm_targets", "streamrec_items_known", "streamrec_warm_slices"
    }
    slices = cold["new_items"]["results"]["streamrec_warm_slices"]
    assert slices["slices"] == len(slices["hr@10_per_slice"]) >= 1
    assert slices["hr@10"] == pytest.approx(np.mean(slices["hr@10_per_slice"]), abs=1e-3)
    assert cold["new_items"]["cold_over_known_hr@10"] is None or cold["new_items"]["cold_over_known_hr@10"] >= 0
    tradeoff = cold["new_items"]["boost_tradeoff"]
    assert [t["factor"] for t in tradeoff] == [1.0, 1.1, 1.2, 1.3, 1.4]
    # Factor 1 is the model as trained: the same figures as the new-item and warm rows.
    assert tradeoff[0]["new_items_hr@10"] == pytest.approx(cold["new_items"]["results"]["streamrec"]["hr@10"], abs=1e-4)
    assert tradeoff[0]["warm_targets_hr@10"] == pytest.approx(
        cold["new_items"]["results"]["streamrec_warm_targets"]["hr@10"], abs=1e-4
    )
    siblings = cold["new_items"]["sibling_tradeoff"]
    assert [(t["min_similarity"], t["ramp"]) for t in siblings] == list(SIBLING_PLACEMENTS)
    steps = [t for t in siblings if t["ramp"] == 0.0]
    found = [t["placed_by_sibling"] for t in steps]
    assert found[0] == 0 and found[1:] == sorted(found[1:], reverse=True)  # stricter, fewer
    assert found[1] <= cold["new_items"]["held_out_items"]
    assert all(t["mixed_with_sibling"] == 0 for t in steps)
    # A ramp mixes more items in as it widens, and places the same ones wholly.
    ramps = [t for t in siblings if t["min_similarity"] == 0.85]
    assert len({t["placed_by_sibling"] for t in ramps}) == 1
    assert [t["mixed_with_sibling"] for t in ramps] == sorted(t["mixed_with_sibling"] for t in ramps)
    # The served placement's row is the model's own new-item figure.
    served_row = next(t for t in siblings if (t["min_similarity"], t["ramp"]) == (
        cold["new_items"]["sibling_similarity"], cold["new_items"]["sibling_ramp"]))
    assert served_row["new_items_hr@10"] == pytest.approx(cold["new_items"]["results"]["streamrec"]["hr@10"], abs=1e-4)
    for group in ("text_only_users", "text_only_new_users"):
        assert {"streamrec", "streamrec_tower", "worker_intent", "worker_intent_whole_text", "encoder_phrase_match",
                "encoder_cosine", "popularity"} == set(cold[group]["results"])
        assert cold[group]["worker_intent_over_popularity_hr@10"] is not None
    # The match weight is picked on the older customers' validation baskets and reused for the new.
    weights = cold["text_only_users"]["validation_ndcg@10_by_weight"]
    assert cold["text_only_users"]["match_weight"] == max(map(float, weights), key=lambda w: weights[str(w)])
    assert cold["text_only_new_users"]["match_weight"] == cold["text_only_users"]["match_weight"]
    assert cold["text_only_new_users"]["users"] > 0
    for block in cold.values():
        assert "protocol" in block
        for metrics in block["results"].values():
            assert METRICS <= set(metrics)
    page = (tmp_path / "report" / "report.md").read_text()
    assert "### new_items" in page and "| factor | new items HR@10 | warm targets HR@10 |" in page
    assert all(0 <= t["validation_ndcg@10"] <= 1 for t in tradeoff)
    # The item title vectors were cached under the data dir.
    assert list((tmp_path / "state" / "cache").glob("text-*.npy"))


def test_first_basket_text_joins_distinct_titles() -> None:
    split = ProtocolSplit(
        name="t", unit="basket", item_ids=list("abc"), users=["u"], units=[[[0, 1, 0], [2], [1]]],
        item_text=["RED MUG", "BLUE MUG", "LAMP"],
    )
    assert first_basket_texts(split, np.array([0])) == ["RED MUG, BLUE MUG"]


def test_format_table_shows_errors() -> None:
    table = format_table({"sasrec": {"error": "no venv"}})
    assert "not run: no venv" in table


def test_item_sequences_get_a_default_time_budget_that_the_option_overrides() -> None:
    split = ProtocolSplit(name="s", unit="item", item_ids=list("ab"), users=["u"], units=[[[0], [1], [0]]])
    baskets = ProtocolSplit(name="b", unit="basket", item_ids=list("ab"), users=["u"], units=[[[0], [1], [0]]])
    assert streamrec_config(split, EvaluateOptions()).time_budget_s == 1500.0
    assert streamrec_config(split, EvaluateOptions(time_budget_s=60.0)).time_budget_s == 60.0
    assert streamrec_config(baskets, EvaluateOptions()).time_budget_s is None
