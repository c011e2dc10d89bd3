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
    batch_loss,
    cooccurrence_embeddings,
    evaluate_cases,
    fit,
    training_examples,
)
from training.model import BEGIN, EXTERNAL, PAD, TowerConfig, TwoTower, windows
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
    assert [e.known.tolist() for e in examples] == [[], [0, 1]]  # already bought: not ranked
    batch = _collate(examples)
    assert batch[0].shape == (2, 3)
    assert batch[4].tolist() == [0, 0, 1]  # target -> query
    assert (batch[7].tolist(), batch[8].tolist()) == ([1, 1], [0, 1])  # known item -> query
    keep_seen = training_examples(split, small(exclude_seen=False))
    assert [e.known.size for e in keep_seen] == [0, 0]
    as_negatives = training_examples(split, small(bought_out_of_softmax=False))
    assert [e.targets[0].tolist() for e in as_negatives] == [[0, 1], [2]]
    assert [e.known.size for e in as_negatives] == [0, 0]


def test_already_bought_items_are_not_in_the_basket_softmax() -> None:
    """Only the items the protocol ranks compete: making an already-bought item the model's
    favourite by far leaves the loss as it was. (A window of one item keeps that item out of
    what the user tower reads, so only its score moves.)"""
    split = ProtocolSplit(
        name="b", unit="basket", item_ids=list("abcdef"), users=["u"], units=[[[0], [1], [2, 3], [4], [5]]]
    )
    config = replace(small(), tower=TowerConfig(dim=16, layers=1, heads=2, max_len=1, dropout=0.0))
    model = TwoTower(6, config.tower)
    model.eval()
    example = training_examples(split, config)[-1]
    assert (example.targets[0].tolist(), example.known.tolist()) == ([2, 3], [0, 1])
    assert 0 not in example.tokens
    batch = _collate([example])
    with torch.no_grad():
        before = batch_loss(model, batch)
        user = model.encode(model.items(), batch[0], batch[1])[0, -1]
        model.items.ids.weight[0] += 100 * user / user.norm()
        after = batch_loss(model, batch)
    assert torch.isfinite(before)
    assert torch.allclose(before, after)


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
        content = model.items.embed_text(torch.ones(3, 3))
        users = model.text_user_vectors([content[:1], content[1:]], model.items())
    assert users.shape == (2, 8)
    assert torch.isfinite(users).all()


def test_embed_text_adds_the_mean_of_the_texts_attribute_vectors() -> None:
    model = TwoTower(
        3, TowerConfig(dim=4, layers=1, heads=2, max_len=4), text=np.ones((3, 2), np.float32),
        attributes=[[0], [1], [0, 1]], n_attributes=2,
    )
    text = torch.ones(2, 2)
    with torch.no_grad():
        plain = model.items.embed_text(text)
        with_words = model.items.embed_text(text, [[0, 1], []])
        bag = model.items.attr_bag.weight
    assert torch.allclose(with_words[0], plain[0] + bag.mean(dim=0))
    assert torch.allclose(with_words[1], plain[1])  # no attribute: the projection alone
    with pytest.raises(ValueError, match="attribute lists"):
        model.items.embed_text(text, [[0]])


def test_text_user_vectors_read_phrases_as_one_basket_and_ignore_padding() -> None:
    torch.manual_seed(0)
    model = TwoTower(5, TowerConfig(dim=8, layers=1, heads=2, max_len=4, unit_recency=True, last_item_skip=True))
    model.eval()
    phrases = torch.randn(3, 8)
    with torch.no_grad():
        items = model.items()
        together = model.text_user_vectors([phrases[:1], phrases], items)
        alone = model.text_user_vectors([phrases[:1]], items)
        # The same pseudo-items as the latest basket of a real window give the same user vector.
        tokens = torch.tensor([[BEGIN, EXTERNAL, EXTERNAL, EXTERNAL]])
        extra = torch.cat([torch.zeros(1, 1, 8), phrases[None]], dim=1)
        direct = model.encode(items, tokens, torch.tensor([[1, 0, 0, 0]]), extra)[:, -1]
    assert torch.allclose(together[0], alone[0], atol=1e-5)  # a shorter user's padding is ignored
    assert torch.allclose(together[1], direct[0], atol=1e-5)
    with pytest.raises(ValueError, match="pseudo-item"):
        model.text_user_vectors([phrases[:0]], items)


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


def test_config_rejects_an_unknown_content_mode() -> None:
    with pytest.raises(ValueError, match="content"):
        TowerConfig(content="concat")


def test_replace_mode_serves_ids_for_known_items_and_content_for_dropped_ones() -> None:
    model = TwoTower(6, TowerConfig(dim=8, layers=1, heads=2, max_len=4, id_dropout=1.0), text=np.eye(6, 5, dtype=np.float32))
    model.items.mask_ids(np.array([4, 5]))
    with torch.no_grad():
        content = model.items.content()
        model.eval()
        vectors = model.items()
        model.train()  # id_dropout 1.0: every id is dropped, every item is its content
        dropped = model.items()
    assert torch.equal(vectors[:4], model.items.ids.weight[:4])
    assert torch.equal(vectors[4:], content[4:])
    assert torch.equal(dropped, content)


def test_an_unknown_item_whose_text_repeats_a_known_ones_takes_its_vector_outside_training() -> None:
    text = np.eye(6, 5, dtype=np.float32)
    text[4] = text[1] + 0.1 * text[2]  # item 4: nearly item 1's text (cosine 0.995)
    text[5] = text[0] + text[3]        # item 5: halfway between items 0 and 3 (cosine 0.71)
    config = TowerConfig(dim=8, layers=1, heads=2, max_len=4, id_dropout=0.5, sibling_similarity=0.85, sibling_ramp=0.0)
    model = TwoTower(6, config, text=text)
    model.items.mask_ids(np.array([4, 5]))
    rows, weights = model.items.siblings(0.85, 0.0)
    assert rows.tolist() == [-1, -1, -1, -1, 1, -1] and weights.tolist() == [0, 0, 0, 0, 1, 0]
    assert model.items.siblings(0.7, 0.0)[0].tolist() == [-1, -1, -1, -1, 1, 0]
    with torch.no_grad():
        content = model.items.content()
        model.eval()
        vectors = model.items()
        without = model.items.placed(None)
        torch.manual_seed(0)
        model.train()  # training places new items by content: the content path is what learns
        trained = model.items()
    assert torch.equal(vectors[4], model.items.ids.weight[1])
    assert torch.equal(vectors[5], content[5])
    assert torch.equal(vectors[:4], model.items.ids.weight[:4])
    assert torch.equal(without[4], content[4])
    assert torch.equal(trained[4], content[4])


def test_below_the_sibling_similarity_an_unknown_item_mixes_its_content_with_the_siblings_vector() -> None:
    text = np.eye(6, 5, dtype=np.float32)
    text[4] = text[1] + 0.1 * text[2]  # cosine 0.995 with item 1: all sibling
    text[5] = text[0] + text[3]        # cosine 0.707 with item 0: 0.707 - 0.657 = 0.05 into a 0.1 ramp
    config = TowerConfig(dim=8, layers=1, heads=2, max_len=4, sibling_similarity=0.757, sibling_ramp=0.1)
    model = TwoTower(6, config, text=text)
    model.items.mask_ids(np.array([4, 5]))
    model.eval()
    with torch.no_grad():
        rows, weights = model.items.siblings(0.757, 0.1)
        vectors, content, ids = model.items(), model.items.content(), model.items.ids.weight
    assert rows.tolist() == [-1, -1, -1, -1, 1, 0]
    share = float(weights[5])
    assert share == pytest.approx((np.sqrt(0.5) - 0.657) / 0.1, abs=1e-4) and 0 < share < 1
    assert torch.equal(vectors[4], ids[1])
    torch.testing.assert_close(vectors[5], share * ids[0] + (1 - share) * content[5])


def test_with_every_item_unknown_each_is_placed_by_its_content() -> None:
    model = TwoTower(3, TowerConfig(dim=8, layers=1, heads=2, max_len=4), text=np.eye(3, 4, dtype=np.float32))
    model.items.mask_ids(np.arange(3))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.items(), model.items.content())
    assert model.items.siblings(0.85, 0.1)[0].tolist() == [-1, -1, -1]


@pytest.mark.parametrize(("similarity", "ramp"), [(0.0, 0.0), (0.85, 0.9), (0.85, -0.1)])
def test_sibling_similarity_and_ramp_must_leave_a_cosine_above_zero(similarity, ramp) -> None:
    with pytest.raises(ValueError, match="sibling_similarity"):
        TowerConfig(sibling_similarity=similarity, sibling_ramp=ramp)
    assert TowerConfig(sibling_similarity=None).sibling_similarity is None


def test_fit_text_projection_recovers_ids_that_are_a_linear_function_of_text() -> None:
    rng = np.random.default_rng(0)
    text = rng.normal(size=(40, 6)).astype(np.float32)
    model = TwoTower(40, TowerConfig(dim=4, layers=1, heads=2, max_len=4), text=text)
    mapping, offset = torch.randn(6, 4), torch.randn(4)
    with torch.no_grad():
        model.items.ids.weight.copy_(torch.from_numpy(text) @ mapping + offset)
        known = torch.arange(40) < 30
        model.items.fit_text_projection(known, ridge=1e-4)
        content = model.items.content()
    # The 10 items left out of the regression are placed where their ids would be.
    assert torch.allclose(content[30:], model.items.ids.weight[30:], atol=1e-3)


def grouped_text(n_groups: int = 8, size: int = 5, seed: int = 0) -> np.ndarray:
    """Item texts that name the item's group (a one-hot) plus noise: text tells groups apart."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.eye(n_groups, dtype=np.float32), size, axis=0)
    return np.concatenate([groups, 0.3 * rng.normal(size=(n_groups * size, 4)).astype(np.float32)], axis=1)


def test_unknown_items_start_on_the_known_items_scale_and_are_placed_by_their_text() -> None:
    # lr 0: the model is what fit() initialised. The text projection starts as the regression
    # of the warm-started ids on text, so an item never trained gets a vector as long as the
    # known ones, next to its group mates (a small random content vector did neither: the
    # unknown items ranked ~7th, at a third of the length).
    split = group_split()
    drop = np.zeros(split.n_items, dtype=bool)
    drop[::5] = True  # the first item of every group is never trained
    frozen = small(epochs=1, lr=0.0, warm_start_window=1)
    frozen = replace(frozen, tower=replace(frozen.tower, id_dropout=0.5, last_item_skip=True))
    text = grouped_text()
    model = fit(split, frozen, text=text, drop=drop).model
    with torch.no_grad():
        vectors = model.items()
        content = model.items.embed_text(torch.from_numpy(text[1::5]))  # one text per group
        users = model.text_user_vectors(list(content[:, None]), vectors)
    norms = vectors.norm(dim=1)
    assert float(norms[torch.from_numpy(drop)].median() / norms[torch.from_numpy(~drop)].median()) > 0.5
    cases = eval_cases(split, "test", only_items=drop)
    assert len(cases) > 10
    assert evaluate_cases(model, split, cases)["mrr"] > 0.5
    # A user known only by a group mate's text gets that group's items first.
    top_groups = (users @ vectors.T).topk(5).indices // 5
    assert bool((top_groups == torch.arange(8)[:, None]).all())


def test_held_out_items_are_not_negatives_in_the_training_loss() -> None:
    split = cyclic_split(n_items=12, length=5)
    text = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    drop = np.zeros(12, dtype=bool)
    drop[2] = True
    config = small()
    model = TwoTower(12, config.tower, text=text)
    model.items.mask_ids(np.flatnonzero(drop))
    model.eval()
    batch = _collate(training_examples(split, config, drop))
    with torch.no_grad():
        before = batch_loss(model, batch)
        model.items.text[2] = 100.0  # the held-out item's content would now win every softmax
        after = batch_loss(model, batch)
    assert torch.isfinite(before)
    assert torch.allclose(before, after)
