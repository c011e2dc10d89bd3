"""streamrec's two towers: item vectors and a transformer user tower, in one space.

* Item tower: a learned item-id embedding and — where the catalog has them — a content vector: a
  learned linear projection of the frozen text embedding of the item (the encoder's vector of its
  title) plus the mean of learned attribute embeddings. With ``content="replace"`` (the default)
  an item's vector is its id vector, or its content vector where the id is dropped or unknown;
  with ``"add"`` it is their sum. During training the id is dropped at random (``id_dropout``),
  so that the content vector alone is a usable item vector: that is how an item never seen in
  training (whose id embedding is untrained, and masked) is placed by its text. Replacing (not
  adding) makes the content vector a whole item vector, trained to compete with id vectors in
  the same softmax; as a correction on top of an id vector it stayed a third of the ids' length,
  and unknown items served by it never reached a top 10. Outside training, an unknown item whose
  text nearly repeats a known item's takes that item's vector instead, or a mix of the two where
  the texts are a little further apart (:mod:`inference.text_siblings`, ``sibling_similarity``,
  ``sibling_ramp``), as the worker does.
* User tower: a causal transformer over the last ``max_len`` item vectors of the user's past (a
  begin token first, so an empty past is valid), with learned position (from the end of the
  window), unit-recency (how many baskets ago) and event-type embeddings. Its output at a
  position is the user vector after that event; an item's score is the dot product with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from inference.event_encoder import MAX_UNIT_AGE
from inference.clustering import unit_rows
from inference.text_siblings import DEFAULT_MIN_SIMILARITY, DEFAULT_RAMP, check_siblings, mixed_with_sibling, nearest_known, sibling_weights

# Event types of the events topic (DESIGN §3) the user tower can tell apart.
EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase", "search", "impression")
PURCHASE = EVENT_TYPES.index("purchase")
# Special tokens of a user window (item tokens are item indices >= 0).
PAD, BEGIN, EXTERNAL = -1, -2, -3
CONTENT_MODES = ("replace", "add")


@dataclass(frozen=True)
class TowerConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.3
    id_dropout: float = 0.0
    unit_recency: bool = False
    # Add each position's own item vector (baskets: the mean vector of the latest basket) to the
    # user vector: the model starts as a "next like the last" predictor (strong with warm-started
    # item vectors) and the transformer learns the correction; its output starts small to match.
    last_item_skip: bool = False
    # How the content vector combines with the id vector of a known item: "replace" (id only;
    # content stands in where the id is dropped or unknown) or "add" (their sum).
    content: str = "replace"
    # Outside training, an unknown item whose text has at least this cosine with a known item's
    # takes that item's vector (inference/text_siblings.py); None: placed by content alone.
    sibling_similarity: float | None = DEFAULT_MIN_SIMILARITY
    # Over this cosine range below sibling_similarity the vector moves from content to the
    # sibling's (0: a step).
    sibling_ramp: float = DEFAULT_RAMP

    def __post_init__(self) -> None:
        if self.content not in CONTENT_MODES:
            raise ValueError(f"TowerConfig.content must be one of {CONTENT_MODES}, not {self.content!r}")
        if self.sibling_similarity is not None:
            try:
                check_siblings(self.sibling_similarity, self.sibling_ramp)
            except ValueError as exc:
                raise ValueError(f"TowerConfig.sibling_similarity / sibling_ramp: {exc}") from None

    def as_dict(self) -> dict:
        return asdict(self)


class ItemTower(nn.Module):
    """Vectors for all items: id embedding (maskable) and content (projected text + attribute
    mean), replacing or added to each other (:attr:`TowerConfig.content`)."""

    def __init__(
        self,
        n_items: int,
        config: TowerConfig,
        text: np.ndarray | None = None,
        attributes: list[list[int]] | None = None,
        n_attributes: int = 0,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.id_dropout = config.id_dropout
        self.sibling_similarity = config.sibling_similarity
        self.sibling_ramp = config.sibling_ramp
        self.replace = config.content == "replace"
        self.ids = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.ids.weight, std=0.02)
        # Items whose id embedding is never trained (held out for cold start): content only.
        self.register_buffer("id_mask", torch.ones(n_items, 1))
        self.text_proj: nn.Linear | None = None
        if text is not None:
            if text.shape[0] != n_items:
                raise ValueError(f"text has {text.shape[0]} rows for {n_items} items")
            self.register_buffer("text", torch.as_tensor(text, dtype=torch.float32))
            self.text_proj = nn.Linear(text.shape[1], config.dim)
        self.attr_bag: nn.EmbeddingBag | None = None
        if attributes is not None and n_attributes > 0:
            flat = [a for attrs in attributes for a in attrs]
            offsets = np.cumsum([0] + [len(a) for a in attributes[:-1]])
            self.register_buffer("attr_flat", torch.as_tensor(flat, dtype=torch.int64))
            self.register_buffer("attr_offsets", torch.as_tensor(offsets, dtype=torch.int64))
            self.attr_bag = nn.EmbeddingBag(n_attributes, config.dim, mode="mean")
            nn.init.normal_(self.attr_bag.weight, std=0.02)

    @property
    def has_content(self) -> bool:
        return self.text_proj is not None or self.attr_bag is not None

    def mask_ids(self, items: np.ndarray) -> None:
        """Serve ``items`` (bool mask or indices) from content alone."""
        self.id_mask[torch.as_tensor(items)] = 0.0

    def content(self) -> torch.Tensor:
        """The content part of every item vector (zeros without text or attributes)."""
        out = torch.zeros(self.n_items, self.ids.embedding_dim, device=self.ids.weight.device)
        if self.text_proj is not None:
            out = out + self.text_proj(self.text)
        if self.attr_bag is not None:
            out = out + self.attr_bag(self.attr_flat, self.attr_offsets)
        return out

    @torch.no_grad()
    def fit_text_projection(self, known: torch.Tensor, ridge: float = 1.0) -> None:
        """Set the text projection to the ridge regression of the known items' id vectors (less
        their attribute part) on their text, bias unpenalised: content then lands where the ids
        are, near their scale (the ridge shrinks it a little). ``known``: bool (n_items,), the
        items whose id vectors to fit."""
        if self.text_proj is None:
            raise ValueError("this item tower has no text projection")
        target = self.ids.weight[known]
        if self.attr_bag is not None:
            target = target - self.attr_bag(self.attr_flat, self.attr_offsets)[known]
        x = self.text[known]
        x_mean, y_mean = x.mean(dim=0), target.mean(dim=0)
        xc, yc = x - x_mean, target - y_mean
        gram = xc.T @ xc + ridge * torch.eye(x.shape[1], device=x.device)
        weight = torch.linalg.solve(gram, xc.T @ yc)  # (text_dim, dim)
        self.text_proj.weight.copy_(weight.T)
        self.text_proj.bias.copy_(y_mean - x_mean @ weight)

    def embed_text(self, text_vectors: torch.Tensor, attributes: list[list[int]] | None = None) -> torch.Tensor:
        """Item-space content vectors (no id) for texts that are not items: the projection of
        each text embedding, plus the mean of its attributes' vectors (e.g. its title words,
        :mod:`training.title_words`) where given and the tower has attributes."""
        if self.text_proj is None:
            raise ValueError("this item tower has no text projection")
        out = self.text_proj(text_vectors)
        if attributes is not None and self.attr_bag is not None:
            if len(attributes) != text_vectors.shape[0]:
                raise ValueError(f"{len(attributes)} attribute lists for {text_vectors.shape[0]} texts")
            flat = torch.as_tensor([a for attrs in attributes for a in attrs], dtype=torch.int64)
            offsets = torch.as_tensor(np.cumsum([0] + [len(a) for a in attributes[:-1]]), dtype=torch.int64)
            out = out + self.attr_bag(flat, offsets)
        return out

    def siblings(self, full_at: float, ramp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """For each unknown (id-masked) item, the known item whose text is nearest and the share
        of its vector in the unknown item's (:func:`sibling_weights`); (-1, 0) for every known
        item and where no known item's text is close enough."""
        rows = torch.full((self.n_items,), -1, dtype=torch.int64)
        weights = torch.zeros(self.n_items)
        unknown = (self.id_mask[:, 0] == 0).cpu().numpy()
        # Every item unknown: no sibling to take (and none to index).
        if self.text_proj is not None and unknown.any() and not unknown.all():
            text = unit_rows(self.text.cpu().numpy())
            known_rows = np.flatnonzero(~unknown)
            nearest, similarity = nearest_known(text[unknown], text[known_rows])
            weight = sibling_weights(similarity, full_at, ramp)
            at = torch.from_numpy(np.flatnonzero(unknown))
            rows[at] = torch.from_numpy(np.where(weight > 0, known_rows[nearest.clip(min=0)], -1))
            weights[at] = torch.from_numpy(weight)
        return rows.to(self.id_mask.device), weights.to(self.id_mask.device)

    def placed(self, sibling_similarity: float | None, ramp: float = 0.0) -> torch.Tensor:
        """Every item's vector, unknown items placed with this sibling similarity and ramp (None:
        by content alone); in training mode ids are dropped at random and siblings are not used."""
        mask = self.id_mask
        if self.training and self.id_dropout > 0 and self.has_content:
            keep = (torch.rand(self.n_items, 1, device=mask.device) >= self.id_dropout).float()
            mask = mask * keep
        if not self.has_content:
            return self.ids.weight * mask
        if self.replace:
            vectors = self.ids.weight * mask + self.content() * (1.0 - mask)
        else:
            vectors = self.ids.weight * mask + self.content()
        if self.training or sibling_similarity is None:
            return vectors
        rows, weights = self.siblings(sibling_similarity, ramp)
        weights = weights[:, None].to(vectors.dtype)
        return mixed_with_sibling(vectors, vectors[rows.clamp(min=0)], weights)

    def forward(self) -> torch.Tensor:
        return self.placed(self.sibling_similarity, self.sibling_ramp)


class UserTower(nn.Module):
    """Causal transformer over item vectors; one user vector per position."""

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.begin = nn.Parameter(torch.zeros(d))
        nn.init.normal_(self.begin, std=0.02)
        self.positions = nn.Embedding(config.max_len + 1, d)
        self.unit_age = nn.Embedding(MAX_UNIT_AGE + 1, d) if config.unit_recency else None
        self.event_type = nn.Embedding(len(EVENT_TYPES), d)
        self.input_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.heads,
            dim_feedforward=d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(d)
        if config.last_item_skip:
            nn.init.constant_(self.output_norm.weight, 0.1)

    def forward(
        self,
        vectors: torch.Tensor,
        padding: torch.Tensor,
        unit_age: torch.Tensor | None = None,
        event_type: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``vectors`` (B, T, d): the begin token then item vectors, left-padded; ``padding``
        (B, T) True where padded. Returns (B, T, d)."""
        batch, length, _ = vectors.shape
        # Positions count from the end of the window, so the latest event is always 0.
        position = torch.arange(length - 1, -1, -1, device=vectors.device).clamp(max=self.config.max_len)
        x = vectors + self.positions(position)[None]
        if self.unit_age is not None and unit_age is not None:
            x = x + self.unit_age(unit_age.clamp(max=MAX_UNIT_AGE))
        if event_type is None:
            event_type = torch.full((batch, length), PURCHASE, dtype=torch.int64, device=vectors.device)
        x = x + self.event_type(event_type)
        x = self.dropout(self.input_norm(x))
        h = self.encoder(x, mask=self.attention_mask(padding))
        return self.output_norm(h)

    def attention_mask(self, padding: torch.Tensor) -> torch.Tensor:
        """(B * heads, T, T), True where attention is blocked: the future and padded keys.

        A padded position may attend to itself, so no row is fully blocked (a fully blocked row
        gives NaN, which 0-weights do not stop from spreading in the next layer).
        """
        # Comparisons of positions, not eye/triu: the same masks, in ops ONNX runtimes implement
        # for booleans (training/tower_export.py exports this).
        position = torch.arange(padding.shape[1], device=padding.device)
        eye = position[:, None] == position[None, :]
        future = position[None, :] > position[:, None]
        blocked = (future | padding[:, None, :]) & ~eye
        return blocked.repeat_interleave(self.config.heads, dim=0)


class TwoTower(nn.Module):
    """Item tower + user tower; ``encode`` turns padded item windows into user vectors."""

    def __init__(
        self,
        n_items: int,
        config: TowerConfig,
        text: np.ndarray | None = None,
        attributes: list[list[int]] | None = None,
        n_attributes: int = 0,
    ) -> None:
        super().__init__()
        self.config = config
        self.items = ItemTower(n_items, config, text, attributes, n_attributes)
        self.users = UserTower(config)

    def window_vectors(self, item_vectors: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens — an item index, :data:`PAD`, :data:`BEGIN` or :data:`EXTERNAL` (a
        vector given by the caller, zero here) — to (B, T, d) input vectors."""
        x = item_vectors[tokens.clamp(min=0)]
        x = torch.where((tokens == BEGIN)[..., None], self.users.begin.expand_as(x), x)
        return torch.where(((tokens == PAD) | (tokens == EXTERNAL))[..., None], torch.zeros_like(x), x)

    def encode(
        self,
        item_vectors: torch.Tensor,
        tokens: torch.Tensor,
        unit_age: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors at every position (B, T, d). ``extra`` (B, T, d) is added to the input
        vectors (used to put a text vector in place of an item)."""
        x = self.window_vectors(item_vectors, tokens)
        if extra is not None:
            x = x + extra
        h = self.users(x, tokens == PAD, unit_age)
        if not self.config.last_item_skip:
            return h
        if not self.config.unit_recency or unit_age is None:
            return h + x
        # Baskets: the mean vector of the latest unit of the window (read at the last position).
        latest = ((unit_age == 0) & (tokens != PAD) & (tokens != BEGIN)).to(x.dtype)[..., None]
        return h + (x * latest).sum(dim=1, keepdim=True) / latest.sum(dim=1, keepdim=True).clamp(min=1.0)

    def text_user_vectors(self, content: list[torch.Tensor], item_vectors: torch.Tensor) -> torch.Tensor:
        """User vectors for users known only by a text: the user tower over the begin token and
        the text's pseudo-items, one per phrase (``content[u]``: (phrases, dim) content vectors,
        :meth:`ItemTower.embed_text`), read as one basket, the latest unit. A text of several
        interests stays several items, as a first basket would, instead of one blurred vector."""
        n = len(content)
        longest = max((len(c) for c in content), default=0)
        if longest == 0:
            raise ValueError("every text user needs at least one pseudo-item")
        length = min(longest, self.config.max_len) + 1
        tokens = torch.full((n, length), PAD, dtype=torch.int64)
        unit_age = torch.zeros((n, length), dtype=torch.int64)
        extra = torch.zeros(n, length, self.config.dim)
        for row, vectors in enumerate(content):
            vectors = vectors[-self.config.max_len :]
            first = length - len(vectors)
            tokens[row, first - 1], unit_age[row, first - 1] = BEGIN, 1
            tokens[row, first:] = EXTERNAL
            extra[row, first:] = vectors
        return self.encode(item_vectors, tokens, unit_age, extra)[:, -1]


def windows(
    pasts: list[list[list[int]]], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded windows (begin token + last ``max_len`` items) and unit ages for scoring.

    ``pasts[b]`` is a user's known units; returns (tokens, unit_age), both (B, T).
    """
    rows = []
    for units in pasts:
        items, ages = [], []
        for age, unit in enumerate(reversed(units)):
            for item in reversed(unit):
                items.append(item)
                ages.append(age)
                if len(items) == max_len:
                    break
            if len(items) == max_len:
                break
        begin_age = len(units)
        rows.append(([BEGIN] + items[::-1], [begin_age] + ages[::-1]))
    length = max(len(r[0]) for r in rows)
    tokens = torch.full((len(rows), length), PAD, dtype=torch.int64)
    unit_age = torch.zeros((len(rows), length), dtype=torch.int64)
    for b, (items, ages) in enumerate(rows):
        tokens[b, length - len(items) :] = torch.as_tensor(items)
        unit_age[b, length - len(ages) :] = torch.as_tensor(ages)
    return tokens, unit_age
