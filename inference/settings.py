"""Settings of the Kafka-free runtime: state location, vector store, encoder, profile and ranking knobs.

Every field can be set by an environment variable `STREAMREC_<FIELD>` (case-insensitive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.experiments import VariantSpec
from inference.profiles import MAX_STATED_PHRASES, PHRASES_UNTIL_RECENT
from inference.segments import SEGMENTS


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(
        default=Path(".streamrec"),
        description="Where embedded vector-store state, exported models and caches live.",
    )
    qdrant_url: str | None = Field(
        default=None,
        description="Qdrant server URL (http://host:6333). Unset: the embedded engine under data_dir.",
    )
    qdrant_api_key: SecretStr | None = Field(default=None, description="Qdrant API key.")
    qdrant_timeout_s: float = Field(default=10.0, gt=0, description="Qdrant request timeout.")
    qdrant_hnsw_ef: int = Field(
        default=128, ge=1, le=4096,
        description="HNSW search width: candidates kept in view per query over indexed segments (a server's, or "
                    "the embedded engine's after `streamrec index`). Higher: better recall, slower search.",
    )
    qdrant_quantization: Literal["int8", "none"] = Field(
        default="int8",
        description="int8: indexed segments keep a scalar-quantized copy of their vectors that the graph walk "
                    "scores with, and hits are rescored with the originals (index built ~2x faster, searches ~2x "
                    "faster, same recall; bench/retrieval.py). Applies to collections created after it is set, and "
                    "to an embedded collection at its next `streamrec index`; none: original vectors only.",
    )
    qdrant_oversampling: float = Field(
        default=2.0, ge=1, le=16,
        description="With int8: candidates taken from the quantized scores per hit asked for, before the original "
                    "vectors rescore them and pick the final top. 1: the quantization error decides what is kept.",
    )
    qdrant_acorn_max_selectivity: float = Field(
        default=0.0, ge=0, le=1,
        description="Filters estimated to pass less than this share of the items are searched with ACORN over "
                    "indexed segments: recall stays high when a filter combines conditions (category and price), at "
                    "a latency cost; 0: off.",
    )
    store_wait_s: float = Field(
        default=300.0, ge=0,
        description="At start, how long to keep retrying a vector store that is unreachable or locked.",
    )

    encoder_model_dir: Path | None = Field(
        default=None,
        description="A Hugging Face model folder to export and serve. Unset: the shipped all-MiniLM-L6-v2.",
    )
    encoder_onnx_dir: Path | None = Field(
        default=None,
        description="An already exported encoder folder (model.onnx + manifest.json); wins over encoder_model_dir.",
    )
    encoder_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA provider when present, else CPU."
    )
    encoder_precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="int8: serve (and have `streamrec train` announce) an int8 copy of the encoder, quantized "
                    "once into data_dir/models and checked against fp32; about 2x fp32's speed on CPU. CPU only. "
                    "A folder quantized already is served as it is.",
    )
    encoder_batch_size: int = Field(default=64, ge=1, le=4096, description="Texts per encoder call.")
    encoder_threads: int | None = Field(default=None, ge=1, description="onnxruntime intra-op threads.")

    long_term_half_life_days: float = Field(default=30.0, gt=0, description="Half-life of long-term interest.")
    session_half_life_minutes: float = Field(default=30.0, gt=0, description="Half-life of session interest.")
    session_gap_minutes: float = Field(default=30.0, gt=0, description="Inactivity that starts a new session.")
    session_weight: float = Field(default=0.5, ge=0, le=1, description="Share of the session vector in the query.")

    exact_retrieval_max_items: int = Field(
        default=20_000, ge=0,
        description="Catalogs up to this many items are retrieved from exactly in memory (the worker's copy of "
        "every item vector, one matrix product per batch); larger ones from the vector store's index. 0: always "
        "the store. With a Qdrant server the copy is read again every item_cache_ttl_s, for other workers' changes.",
    )
    event_encoder: bool = Field(
        default=True,
        description="Serve the event encoder (user tower) where the model folder has one (`tower/`, written by "
        "`streamrec train --tower` or `streamrec evaluate --export-tower`): users with recent items are retrieved "
        "for by a fresh user vector computed from them on every event. false: the profile's text vectors only.",
    )
    blas_threads: int = Field(
        default=1, ge=1, le=256,
        description="numpy's BLAS threads in the worker's recommender process. OpenBLAS spins idle threads, "
        "which took cores from the worker's other process and the broker (bench/reports/perf-20261207b).",
    )
    candidates: int = Field(default=100, ge=1, le=1000, description="ANN candidates retrieved before re-ranking.")
    default_k: int = Field(default=10, ge=1, le=200, description="Items per recommendation unless a request says otherwise.")
    exclude_purchased: bool = Field(
        default=True, description="Leave items the user already bought out of recommendations."
    )
    weight_similarity: float = Field(default=1.0, ge=0, description="Ranking weight of interest similarity.")
    weight_popularity: float = Field(default=0.15, ge=0, description="Ranking weight of log-scaled fresh popularity.")
    weight_category: float = Field(default=0.1, ge=0, description="Ranking weight of the user's category preference.")
    popularity_half_life_days: float = Field(default=7.0, gt=0, description="Half-life of item popularity.")
    profile_cache_size: int = Field(default=100_000, ge=1, description="User profiles kept in memory.")
    item_cache_ttl_s: float = Field(
        default=30.0, gt=0,
        description="How long a worker trusts its cached copy of an item before reading it again from the "
        "vector store: a catalog change another worker consumed (price, stock, deletion) reaches this one within it.",
    )
    pseudonymisation_key: SecretStr | None = Field(
        default=None,
        description="If set, stored state is keyed by HMAC-SHA256(key, user id) instead of the user id "
        "(messages keep the ids the shop sent). Changing it orphans existing profiles.",
    )

    exploration_rate: float = Field(
        default=0.1, ge=0, le=1,
        description="Share of recommendation slots that explore a topic new to the user (Thompson sampling).",
    )
    exploration_prior_strength: float = Field(
        default=20.0, ge=0, description="How many observations the global topic rate is worth in a user's posterior."
    )
    topics: int = Field(
        default=24, ge=2, le=1000, description="Catalog topics (k-means over item vectors): the exploration arms."
    )
    intent_phrases: int = Field(
        default=16, ge=0, le=MAX_STATED_PHRASES,
        description="An intent that lists interests (\"running shoes, camping gear\") is also retrieved from phrase "
        f"by phrase, up to this many, until the user has {PHRASES_UNTIL_RECENT} recent items; 0: the whole text as "
        "one vector only. "
        "Each phrase kept costs ~2 KB of the user's stored state and one more query per recommendation.",
    )
    interest_clusters: int = Field(
        default=3, ge=1, le=8,
        description="Interest centroids per user (PinnerSage-style medoids of recent items) retrieved from; 1: off.",
    )
    interest_groups: int = Field(
        default=8, ge=2, le=256, description="Global interest groups: k-means over user vectors, named from items."
    )
    rfm_recency_days: list[float] = Field(
        default=[14.0, 32.0, 71.0, 179.0], min_length=4, max_length=4,
        description="Days since the last purchase at which R drops from 5 to 4, 3, 2, 1 (JSON list).",
    )
    rfm_frequency: list[float] = Field(
        default=[14.0, 29.0, 58.0, 121.0], min_length=4, max_length=4,
        description="Purchase lines at which F rises from 1 to 2, 3, 4, 5 (JSON list).",
    )
    rfm_monetary: list[float] = Field(
        default=[250.0, 485.0, 925.0, 2045.0], min_length=4, max_length=4,
        description="Spend at which M rises from 1 to 2, 3, 4, 5 (JSON list).",
    )
    segment_price_boost: dict[str, float] = Field(
        default={},
        description='Ranking weight of (log) price per value segment, e.g. {"champions": 0.1} (JSON object).',
    )
    purchase_model_path: Path | None = Field(
        default=None,
        description="Purchase-probability model JSON (`streamrec purchase-model`). Unset: the shipped one.",
    )
    ab_variants: dict[str, VariantSpec] = Field(
        default={},
        description='A/B variants, e.g. {"control": {"weight": 1}, "explore": {"weight": 1, "exploration_rate": 0.3}} '
        "(JSON; each may override exploration_rate, weight_* and interest_clusters). Empty: one variant, default.",
    )
    ab_salt: str = Field(default="streamrec", description="Salt of the variant assignment hash; change it to reshuffle.")

    @field_validator("rfm_recency_days", "rfm_frequency", "rfm_monetary")
    @classmethod
    def _ascending(cls, cutoffs: list[float]) -> list[float]:
        if any(b < a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ValueError(f"cutoffs must be ascending, got {cutoffs}")
        return cutoffs

    @model_validator(mode="after")
    def _int8_runs_on_cpu(self) -> InferenceSettings:
        if self.encoder_precision == "int8" and self.encoder_device == "cuda":
            raise ValueError("encoder_precision int8 is for the CPU provider (onnxruntime runs its dynamic int8 "
                             "ops on the CPU); on CUDA serve fp32")
        return self

    @field_validator("segment_price_boost")
    @classmethod
    def _known_segments(cls, boost: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(boost) - set(SEGMENTS))
        if unknown:
            raise ValueError(f"unknown segments {unknown}; known: {', '.join(SEGMENTS)}")
        return boost

    @property
    def catalog_refresh_s(self) -> float | None:
        """How often the worker reads the catalog again for exact retrieval: with a Qdrant server,
        other workers write items too; the embedded store is locked to this one, which sees every
        change it makes. None: never."""
        shared = bool(self.qdrant_url) and self.qdrant_url != ":memory:"
        copied = self.exact_retrieval_max_items > 0 or self.event_encoder
        return self.item_cache_ttl_s if shared and copied else None
