"""Tests for training/finetune.py: pairs, the time split, dump parsing, the publishing rule, and
a short fine-tune of the tiny random BERT into a version folder the serving encoder loads."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.encoder import TextEncoder
from inference.schemas import EventType
from training import finetune
from training.datasets import clean_online_retail
from training.finetune import (
    EVENT_WEIGHTS,
    FinetuneOptions,
    NotEnoughData,
    PairSet,
    add_arguments,
    build_pairs,
    interactions_from_retail,
    options_from_args,
    publish_decision,
    rank_metrics,
    read_registry,
    read_topic_dump,
    restrict_window,
    split_by_time,
    train_version,
    validation_cutoff,
)

T0 = pd.Timestamp("2024-01-01T00:00:00Z")
ITEM_INDEX = {name: i for i, name in enumerate("abcdefghij")}
NAMES = {i: name for name, i in ITEM_INDEX.items()}


def frame(*rows: tuple[str, str, str, float] | tuple[str, str, str, float, float]) -> pd.DataFrame:
    """Events as (user, basket, item letter, day[, weight])."""
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item": [ITEM_INDEX[r[2]] for r in rows],
            "basket": [r[1] for r in rows],
            "ts": [T0 + pd.Timedelta(days=r[3]) for r in rows],
            "weight": [r[4] if len(r) > 4 else 1.0 for r in rows],
        }
    )


def named(pairs: PairSet) -> set[tuple[str, str]]:
    return {(NAMES[s], NAMES[t]) for s, t in zip(pairs.source, pairs.target)}


# --------------------------------------------------------------------------------------------
# Pairs


def test_pairs_link_consecutive_units_never_one_basket_and_targets_are_later():
    events = frame(
        ("u1", "B1", "a", 1), ("u1", "B1", "b", 1),
        ("u1", "B2", "c", 2), ("u1", "B2", "d", 2),
        ("u1", "B3", "e", 3), ("u1", "B4", "f", 3),  # two baskets at one instant: one unit
        ("u2", "X1", "a", 1),
        ("u2", "X2", "a", 5), ("u2", "X2", "c", 5),  # a repurchase is no pair
    )
    pairs = build_pairs(events, max_per_transition=100)
    assert sorted(named(pairs)) == sorted(
        {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "e"), ("c", "f"), ("d", "e"), ("d", "f")}
        | {("a", "c")}
    )
    assert len(pairs) == 9  # (a, c) once for each user
    assert (pairs.target_ts > pairs.source_ts).all()
    assert not named(pairs) & {("a", "b"), ("b", "a"), ("c", "d"), ("e", "f"), ("f", "e"), ("a", "a")}


def test_a_basket_is_one_unit_even_when_its_lines_straddle_a_later_event():
    # Basket B1's second line is logged after the view of c, but the basket is one unit at day 1.
    events = frame(("u", "B1", "a", 1), ("u", "V", "c", 2), ("u", "B1", "b", 3))
    assert named(build_pairs(events)) == {("a", "c"), ("b", "c")}


def test_pairs_per_transition_are_capped_deterministically():
    first = [("u", "B1", x, 1) for x in "abcde"]
    second = [("u", "B2", x, 2) for x in "fghij"]
    events = frame(*first, *second)
    capped = build_pairs(events, max_per_transition=3, seed=7)
    assert len(capped) == 3
    assert named(capped) == named(build_pairs(events, max_per_transition=3, seed=7))
    assert len(build_pairs(events, max_per_transition=100)) == 25


def test_online_retail_invoices_are_units():
    def line(invoice: str, code: str, when: str, customer: float = 1.0) -> dict:
        return {"InvoiceNo": invoice, "StockCode": code, "Description": f"ITEM {code}", "Quantity": 1,
                "InvoiceDate": when, "UnitPrice": 1.0, "CustomerID": customer, "Country": "United Kingdom"}

    raw = pd.DataFrame(
        [
            line("1", "10A", "2011-01-03 10:00"), line("1", "11A", "2011-01-03 10:00"),
            line("2", "12A", "2011-01-03 10:00"),  # another invoice at the same minute: unordered
            line("3", "13A", "2011-02-01 09:00"), line("3", "14A", "2011-02-01 09:00"),
        ]
    )
    interactions = interactions_from_retail(clean_online_retail(raw))
    assert interactions.item_texts == ["ITEM 10A", "ITEM 11A", "ITEM 12A", "ITEM 13A", "ITEM 14A"]
    pairs = build_pairs(interactions.events, max_per_transition=100)
    ids = interactions.item_ids
    got = {(ids[s], ids[t]) for s, t in zip(pairs.source, pairs.target)}
    assert got == {(s, t) for s in ("10A", "11A", "12A") for t in ("13A", "14A")}


def test_pair_weights_follow_the_target_event_type():
    events = frame(("u", "1", "a", 1, EVENT_WEIGHTS[EventType.view]),
                   ("u", "2", "b", 2, EVENT_WEIGHTS[EventType.purchase]),
                   ("u", "3", "c", 3, EVENT_WEIGHTS[EventType.view]))
    pairs = build_pairs(events)
    weight = {(NAMES[s], NAMES[t]): float(w) for s, t, w in zip(pairs.source, pairs.target, pairs.weight)}
    assert weight == {("a", "b"): 1.0, ("b", "c"): 0.25}
    w = EVENT_WEIGHTS
    assert w[EventType.purchase] > w[EventType.add_to_cart] > w[EventType.click] > w[EventType.view]


# --------------------------------------------------------------------------------------------
# Time split and window


def test_validation_split_is_by_target_time():
    events = frame(*[("u", str(day), "abcdefghij"[day % 10], day) for day in range(101)])
    cutoff = validation_cutoff(events, 0.1)
    assert cutoff == T0 + pd.Timedelta(days=90)
    train, validation = split_by_time(build_pairs(events), cutoff)
    cut_ns = cutoff.value
    assert len(validation) == 11 and len(train) == 89  # targets on days 90..100 / 1..89
    assert (validation.target_ts >= cut_ns).all() and (train.target_ts < cut_ns).all()
    assert (train.source_ts < cut_ns).all()
    # The pair from day 89 to day 90 is validation: its target is in the window.
    assert (validation.source_ts < cut_ns).sum() == 1


def test_since_until_keep_a_half_open_window():
    events = frame(("u", "1", "a", 1), ("u", "2", "b", 2), ("u", "3", "c", 3))
    interactions = finetune.InteractionLog(list(ITEM_INDEX), list(ITEM_INDEX), events, {})
    kept = restrict_window(interactions, T0 + pd.Timedelta(days=2), T0 + pd.Timedelta(days=3))
    assert [NAMES[i] for i in kept.events["item"]] == ["b"]
    assert kept.counts["events_outside_window"] == 2


# --------------------------------------------------------------------------------------------
# Topic dump


def item_msg(item_id: str, title: str, **extra) -> dict:
    return {"schema": 1, "item_id": item_id, "title": title, **extra}


def event_msg(event_id: str, user: str, item: str | None, day: float, type_: str = "purchase", **extra) -> dict:
    ts = (T0 + pd.Timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = {"schema": 1, "event_id": event_id, "user_id": user, "type": type_, "ts": ts, **extra}
    if item is not None:
        message["item_id"] = item
    return message


def write_lines(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_dump_parsing_skips_and_counts_bad_lines(tmp_path: Path):
    items = write_lines(tmp_path / "items.jsonl", [
        item_msg("p1", "Red mug", category="kitchen", description="Stoneware"),
        item_msg("p2", "Blue mug"),
        "{not json",
        {"schema": 1, "item_id": "p9"},  # no title
        item_msg("p3", "Old mug"),
        item_msg("p3", "", deleted=True),  # the final state drops p3
        "",
    ])
    events = write_lines(tmp_path / "events.jsonl", [
        event_msg("e1", "u1", "p1", 1, session_id="s1"),
        event_msg("e2", "u1", "p2", 2, "view"),
        event_msg("e1", "u1", "p1", 1, session_id="s1"),  # redelivered
        "[1, 2",
        {**event_msg("e3", "u1", "p2", 3), "quantity": "two"},  # mistyped: strict like the worker
        event_msg("e4", "u1", None, 3, "search", query="mugs"),
        event_msg("e5", "u1", "p2", 3, "impression"),
        event_msg("e6", "u1", "p3", 4),  # deleted item
        event_msg("e7", "u1", "p404", 4),  # never in the catalog
        {k: v for k, v in event_msg("e8", "u1", "p1", 5).items() if k != "ts"},
        event_msg("e9", "u2", "p2", 5, "click"),
    ])
    dump = read_topic_dump(events, items)
    assert dump.item_ids == ["p1", "p2"]
    assert dump.item_texts == ["Red mug. kitchen. Stoneware", "Blue mug"]
    assert dump.counts == {
        "items_read": 6, "items_bad_lines": 2, "items_deleted": 1,
        "events_read": 11, "events_bad_lines": 3, "events_duplicate": 1, "events_ignored_type": 2,
        "events_unknown_item": 2, "events_used": 3,
    }
    assert len(dump.bad_lines) == 5 and dump.bad_lines[0].startswith("items.jsonl:3:")
    ev = dump.events
    assert list(ev["user_id"]) == ["u1", "u1", "u2"]
    assert list(ev["item"]) == [0, 1, 1]
    assert list(ev["weight"]) == [1.0, 0.25, 0.5]
    assert ev["basket"].iloc[0] == "session:s1" and ev["basket"].iloc[1].startswith("at:")


# --------------------------------------------------------------------------------------------
# Evaluation and the publishing rule


def test_rank_metrics_rank_all_items_and_exclude_the_source():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors[1] = vectors[0] + 1e-3  # item 1 is item 0's nearest neighbour
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    far = int(np.argmin(np.where(np.isinf(scores[0]), np.inf, scores[0])))
    perfect = rank_metrics(vectors, np.array([0]), np.array([1]))
    assert perfect == {"hr@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0}
    worst = rank_metrics(vectors, np.array([0]), np.array([far]))
    assert worst["hr@10"] == 0.0 and worst["mrr"] == pytest.approx(1 / 29)  # 29: the source is out
    both = rank_metrics(vectors, np.array([0, 0]), np.array([1, far]))
    assert both["mrr"] == pytest.approx((1 + 1 / 29) / 2)


def test_publish_decision():
    base, better, worse = ({"ndcg@10": v} for v in (0.10, 0.12, 0.08))
    assert publish_decision(base, better, 100)[0] is True
    assert publish_decision(base, base, 100)[0] is True  # not worse
    ok, reason = publish_decision(base, worse, 100)
    assert ok is False and "worse" in reason and "--force" in reason
    ok, reason = publish_decision(base, worse, 100, force=True)
    assert ok is True and reason.startswith("forced")
    assert publish_decision(base, better, 0)[0] is False  # nothing to compare on


# --------------------------------------------------------------------------------------------
# The refit with the tiny model

TITLES = [
    "red ceramic mug", "blue ceramic mug", "green tea cup", "glass teapot", "bamboo tea tray",
    "running shoes", "trail running socks", "water bottle", "camping stove", "tent pegs",
    "wool scarf", "knitted gloves",
]


@pytest.fixture()
def dump(tmp_path: Path) -> tuple[Path, Path]:
    """Eight users, each with a unit every ~10 days over 100 days: the last units are validation."""
    items = [item_msg(f"p{i:02d}", title, category="kitchen" if i < 5 else "outdoor") for i, title in enumerate(TITLES)]
    events, n = [], 0
    rng = np.random.default_rng(3)
    for u in range(8):
        for k in range(11):
            day = min(100.0, k * 10 + u * 0.5)
            for j in rng.choice(len(TITLES), size=2, replace=False):
                n += 1
                events.append(event_msg(f"e{n}", f"u{u}", f"p{j:02d}", day, session_id=f"s{u}-{k}"))
    return write_lines(tmp_path / "events.jsonl", events), write_lines(tmp_path / "items.jsonl", items)


def options(dump: tuple[Path, Path], models_root: Path, **kw) -> FinetuneOptions:
    return FinetuneOptions(format="dump", events=dump[0], items=dump[1], models_root=models_root,
                           max_steps=3, batch_size=16, threads=1, device="cpu", **kw)


def pooled_torch(model_dir: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    ids, pad_id = finetune._tokenize(model_dir / "tokenizer.json", texts, 256)
    return finetune.embed_items(model, ids, pad_id, torch.device("cpu"))


def test_fine_tune_publishes_a_version_the_encoder_loads(dump, tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "models"
    first = train_version(options(dump, root, base=tiny_model_dir, force=True))
    assert first.published and first.path == root / "versions" / first.version
    assert re.fullmatch(r"ft-\d{14}-[0-9a-f]{8}", first.version)
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest == first.manifest
    for key in ("version", "base_version", "dim", "tokenizer", "metrics", "data_window", "n_events",
                "n_pairs", "train_s", "steps", "device", "created_at"):
        assert key in manifest, key
    assert manifest["version"] == first.version and manifest["steps"] == 3 and manifest["device"] == "cpu"
    assert manifest["base_version"].startswith(tiny_model_dir.name)
    assert manifest["n_events"] == 8 * 11 * 2 and manifest["n_pairs"] > 0
    assert set(manifest["metrics"]) == {"base", "tuned", "n_validation"} and manifest["metrics"]["n_validation"] > 0
    assert set(manifest["metrics"]["tuned"]) == {"hr@10", "ndcg@10", "mrr"}
    assert manifest["data_window"]["from"] == "2024-01-01T00:00:00Z"
    assert manifest["data_window"]["to"] == "2024-04-10T00:00:00Z"
    assert not list((root / "versions").glob(".*")), "no staging folder may be left behind"

    encoder = TextEncoder(first.path, device="cpu", threads=1)
    assert encoder.version == first.version and encoder.dim == manifest["dim"] == 64
    texts = ["red ceramic mug. kitchen", "tent pegs"]
    # Served vectors are the tuned torch model's, pooled as in training.
    np.testing.assert_allclose(encoder.encode(texts), pooled_torch(first.path / "hf", texts), atol=1e-4)
    # ... and not the base's: three steps moved the weights.
    assert np.abs(encoder.encode(texts) - pooled_torch(tiny_model_dir, texts)).max() > 1e-6

    entries = read_registry(root)
    assert [e["version"] for e in entries] == [first.version]
    assert entries[0]["path"] == f"versions/{first.version}" and entries[0]["metrics"] == manifest["metrics"]

    # With no --base the next refit starts from the latest published version, and appends.
    second = train_version(options(dump, root, force=True, seed=1))
    assert second.published and second.manifest["base_version"] == first.version
    assert [e["version"] for e in read_registry(root)] == [first.version, second.version]
    assert read_registry(root)[0] == entries[0]


def refit_scores_worse_than_base(monkeypatch) -> None:
    """The offline check scores each base 0.5 and each tuned model 0.4 (the calls alternate)."""
    calls = []

    def fake_metrics(vectors, source, target, k=10):
        calls.append(len(source))
        value = 0.5 if len(calls) % 2 else 0.4
        return {"hr@10": value, "ndcg@10": value, "mrr": value}

    monkeypatch.setattr(finetune, "rank_metrics", fake_metrics)


def test_worse_than_base_is_not_published(dump, tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    refit_scores_worse_than_base(monkeypatch)
    root = tmp_path / "models"
    result = train_version(options(dump, root, base=tiny_model_dir))
    assert result.published is False and result.path is None
    assert "worse" in result.reason and result.manifest["metrics"]["tuned"]["ndcg@10"] == 0.4
    assert not (root / "versions").exists() and read_registry(root) == []

    forced = train_version(options(dump, root, base=tiny_model_dir, force=True))
    assert forced.published and forced.reason.startswith("forced")
    assert [e["version"] for e in read_registry(root)] == [forced.version]


def test_too_little_data_is_an_error(tmp_path: Path, tiny_model_dir: Path):
    items = write_lines(tmp_path / "items.jsonl", [item_msg("p1", "mug"), item_msg("p2", "cup")])
    events = write_lines(tmp_path / "events.jsonl", [event_msg("e1", "u1", "p1", 1), event_msg("e2", "u2", "p2", 2)])
    with pytest.raises(NotEnoughData, match="training pair"):
        train_version(options((events, items), tmp_path / "models", base=tiny_model_dir))


def test_corrupt_registry_is_never_overwritten(tmp_path: Path):
    (tmp_path / "registry.json").write_text("{oops")
    with pytest.raises(finetune.RegistryCorrupt):
        finetune.append_registry(tmp_path, {"version": "v"})
    assert (tmp_path / "registry.json").read_text() == "{oops"


def test_command_line_options_map_onto_the_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert options_from_args(parser.parse_args([])) == FinetuneOptions()
    args = parser.parse_args(["--format", "dump", "--events", "e.jsonl", "--items", "i.jsonl", "--since",
                              "2011-01-01", "--max-steps", "5", "--force", "--json"])
    opts = options_from_args(args)
    assert opts.format == "dump" and opts.events == Path("e.jsonl") and opts.max_steps == 5 and opts.force
    assert opts.since == pd.Timestamp("2011-01-01T00:00:00Z")


def test_at_int8_the_version_to_announce_is_the_checked_int8_copy(dump, tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "models"
    result = train_version(options(dump, root, base=tiny_model_dir, force=True, precision="int8"))
    fp32_version = result.manifest["quantized_from"]
    assert result.published and result.version == fp32_version + "-int8"
    assert result.path == root / "versions" / result.version
    assert json.loads((result.path / "manifest.json").read_text()) == result.manifest
    metrics = result.manifest["metrics"]
    assert set(metrics) == {"base", "tuned", "int8", "n_validation"}
    assert set(metrics["int8"]) == {"hr@10", "ndcg@10", "mrr"}
    encoder = TextEncoder(result.path, device="cpu", threads=1)
    assert (encoder.version, encoder.precision) == (result.version, "int8")
    assert "int8" in finetune.format_result(result)

    # The fp32 version stays the registered one (a later refit starts from its hf/ weights).
    (entry,) = read_registry(root)
    assert entry["version"] == fp32_version and entry["variants"] == {"int8": f"versions/{result.version}"}
    assert (root / "versions" / fp32_version / "hf").is_dir()
    assert train_version(options(dump, root, force=True, seed=1)).manifest["base_version"] == fp32_version


def test_with_tower_the_version_carries_an_event_encoder_the_worker_serves(dump, tiny_model_dir: Path, tmp_path: Path):
    from inference.event_encoder import EventEncoder, load_event_encoder

    root = tmp_path / "models"
    result = train_version(options(dump, root, base=tiny_model_dir, force=True, precision="int8", tower=True,
                                   tower_time_budget=10.0))
    fp32_dir = root / "versions" / result.manifest["quantized_from"]
    tower = result.manifest["tower"]
    assert tower["trained_on"]["users"] == 8 and tower["epochs"] >= 1
    assert set(tower["metrics"]) == {"validation", "test"}
    # Trained beside the new fp32 encoder; the int8 copy (the version announced) carries it too.
    for folder in (fp32_dir, result.path):
        served = load_event_encoder(folder)
        assert isinstance(served, EventEncoder) and served.text_space == fp32_dir.name
        assert served.known_items == len(TITLES) and served.places_new_items()
    assert "event encoder:" in finetune.format_result(result)


def test_with_tower_a_refit_worse_than_its_base_publishes_the_base_weights_beside_the_tower(
        dump, tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    from inference.event_encoder import load_event_encoder

    refit_scores_worse_than_base(monkeypatch)
    root = tmp_path / "models"
    result = train_version(options(dump, root, base=tiny_model_dir, tower=True, tower_time_budget=5.0))
    assert result.published and result.manifest["encoder_weights"] == "base"
    assert "not kept" in result.reason and "worse" in result.reason and "--force" not in result.reason
    texts = ["red ceramic mug. kitchen", "tent pegs"]  # the served text encoder is the base
    np.testing.assert_allclose(TextEncoder(result.path, device="cpu", threads=1).encode(texts),
                               pooled_torch(tiny_model_dir, texts), atol=1e-4)
    assert load_event_encoder(result.path).text_space == result.version
    assert [e["version"] for e in read_registry(root)] == [result.version]
