"""The two-tower model and its training loop on tiny synthetic data."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from training.fit import (
    FitConfig,
    _collate,
    cooccurrence_embeddings,
    evaluate_cases,
    fit,
    training_examples,
)
from training.model import BEGIN, PAD, TowerConfig, TwoTower, windows
from training.split import ProtocolSplit, eval_cases


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def cyclic_split(n_users: int = 60, n_items: int = 12, length: int = 8, seed: int = 0) -> ProtocolSplit:
    """Each user walks the items in a cycle from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(n_users):
        start = int(rng.integers(n_items))
        units.append([[(start + s) % n_items] for s in range(length)])
    return ProtocolSplit(
        name="cycle",
        unit="item",
        item_ids=[f"i{i}" for i in range(n_items)],
        users=[f"u{u}" for u in range(n_users)],
        units=units,
    )


def small(**overrides) -> FitConfig:
    tower = TowerConfig(dim=16, layers=1, heads=2, max_len=10, dropout=0.0)
    settings = {"epochs": 30, "patience": 30, "batch_size": 16, "lr": 1e-2, "progress": False} | overrides
    return FitConfig(tower=tower, **settings)


def test_windows_are_left_padded_with_a_begin_token_and_unit_ages() -> None:
    tokens, ages = windows([[[1, 2], [3]], []], max_len=2)
    assert tokens.tolist() == [[BEGIN, 2, 3], [PAD, PAD, BEGIN]]
    assert ages.tolist() == [[2, 1, 0], [0, 0, 0]]


def test_item_sequence_examples_predict_every_next_item() -> None:
    split = cyclic_split(n_users=1, length=5)
    (example,) = training_examples(split, small())
    history = [unit[0] for unit in split.history(0)]
    assert example.tokens.tolist() == [BEGIN] + history[:-1]
    assert [t.tolist() for t in example.targets] == [[h] for h in history]


def test_basket_examples_use_past_baskets_and_novel_targets() -> None:
    split = ProtocolSplit(
        name="b", unit="basket", item_ids=list("abcd"), users=["u"], units=[[[0, 1], [1, 2], [3], [0]]]
    )
    examples = training_examples(split, small())
    assert [e.targets[0].tolist() for e in examples] == [[0, 1], [2]]  # b was seen: not a target
    assert examples[1].tokens.tolist() == [BEGIN, 0, 1]
    batch = _collate(examples)
    assert batch[0].shape == (2, 3)
    assert batch[4].tolist() == [0, 0, 1]  # target -> query


def test_fit_learns_a_predictable_sequence_and_beats_chance() -> None:
    split = cyclic_split()
    result = fit(split, small())
    metrics = evaluate_cases(result.model, split, eval_cases(split, "test"))
    assert result.best_epoch >= 1 and result.history
    assert metrics["hr@10"] > 0.9
    assert metrics["ndcg@10"] > 0.5


def test_held_out_items_get_content_only_vectors() -> None:
    split = cyclic_split(n_items=12, length=5)
    text = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    drop = np.zeros(12, dtype=bool)
    drop[2] = True
    config = small(epochs=2)
    result = fit(split, config, text=text, drop=drop)
    model = result.model
    with torch.no_grad():
        vectors = model.items()
        content = model.items.content()
    assert torch.allclose(vectors[2], content[2])
    assert not torch.allclose(vectors[3], content[3])
    assert all(2 not in t for e in training_examples(split, config, drop) for t in e.targets)
    assert all(2 not in e.tokens for e in training_examples(split, config, drop))


def test_text_user_vectors_have_the_model_dimension() -> None:
    model = TwoTower(5, TowerConfig(dim=8, layers=1, heads=2, max_len=4), text=np.ones((5, 3), np.float32))
    model.eval()
    with torch.no_grad():
        users = model.text_user_vectors(torch.ones(2, 3), model.items())
    assert users.shape == (2, 8)
    assert torch.isfinite(users).all()


def test_padding_never_produces_nan() -> None:
    model = TwoTower(5, TowerConfig(dim=8, layers=2, heads=2, max_len=6))
    model.eval()
    tokens, ages = windows([[[1]], [[1], [2], [3], [4]]], max_len=6)
    with torch.no_grad():
        hidden = model.encode(model.items(), tokens, ages)
    assert torch.isfinite(hidden).all()


def test_last_unit_skip_adds_the_latest_basket_mean() -> None:
    config = TowerConfig(dim=8, layers=1, heads=2, max_len=6, unit_recency=True, last_item_skip=True)
    model = TwoTower(5, config)
    model.eval()
    with torch.no_grad():
        model.users.output_norm.weight.zero_()  # transformer part -> 0: only the skip remains
        model.users.output_norm.bias.zero_()
        vectors = model.items()
        tokens, ages = windows([[[0, 1], [2, 3]]], max_len=6)
        out = model.encode(vectors, tokens, ages)[0, -1]
    assert torch.allclose(out, (vectors[2] + vectors[3]) / 2, atol=1e-6)


def test_last_item_skip_adds_each_positions_own_item_vector() -> None:
    model = TwoTower(5, TowerConfig(dim=8, layers=1, heads=2, max_len=6, last_item_skip=True))
    model.eval()
    with torch.no_grad():
        model.users.output_norm.weight.zero_()  # transformer part -> 0: only the skip remains
        model.users.output_norm.bias.zero_()
        vectors = model.items()
        tokens, ages = windows([[[3], [1], [4]]], max_len=6)
        out = model.encode(vectors, tokens, ages)[0]
    assert torch.allclose(out[1:], vectors[[3, 1, 4]], atol=1e-6)


def group_split(n_users: int = 200, n_groups: int = 8, size: int = 5, seed: int = 0) -> ProtocolSplit:
    """Each user buys the items of one group (of ``size``), in random order: the next item is one
    of the group's, and co-occurrence alone says which group."""
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(n_users):
        group = int(rng.integers(n_groups))
        units.append([[group * size + int(i)] for i in rng.permutation(size)])
    n_items = n_groups * size
    return ProtocolSplit(
        name="groups", unit="item", item_ids=[f"i{i}" for i in range(n_items)],
        users=[f"u{u}" for u in range(n_users)], units=units,
    )


def test_cooccurrence_embeddings_are_scaled_and_place_group_mates_closest() -> None:
    vectors = cooccurrence_embeddings(group_split(), dim=16, window=1, scale=3.0)
    assert vectors.shape == (40, 16)
    assert torch.allclose(vectors.norm(dim=1), torch.full((40,), 3.0), atol=1e-4)
    similarity = vectors @ vectors.T
    similarity.fill_diagonal_(-math.inf)
    nearest = similarity.topk(4, dim=1).indices
    assert bool((nearest // 5 == torch.arange(40)[:, None] // 5).all())


def test_warm_start_alone_predicts_the_next_item() -> None:
    # lr 0: the model is what fit() initialised; the co-occurrence warm start plus the
    # "next like the last" skip already ranks the last group mates first.
    split = group_split()
    cases = eval_cases(split, "test")
    frozen = small(epochs=1, lr=0.0)
    frozen = replace(frozen, tower=replace(frozen.tower, last_item_skip=True))
    warm = fit(split, replace(frozen, warm_start_window=1)).model
    cold = fit(split, frozen).model
    assert evaluate_cases(warm, split, cases)["hr@10"] > 0.95
    assert evaluate_cases(cold, split, cases)["hr@10"] < 0.6
