"""Settings of the Kafka side: broker, topics, batching, limits on input, HTTP.

Every field can be set by an environment variable `STREAMREC_<FIELD>` (case-insensitive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


TOPICS = ("events", "items", "intents", "requests", "erasures",
          "recommendations", "segments", "deadletter", "erasures-confirmed", "model-updates")
"""Suffixes of the topics a worker reads or writes (the prefix is a setting)."""


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore", env_ignore_empty=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers (host:port)."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How to talk to Kafka; production: SASL_SSL."
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (Strimzi's SCRAM users: SCRAM-SHA-512)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret).")
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates.")
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client key for mutual TLS.")
    topic_prefix: str = Field(default="streamrec.", description="Prefix of every topic name.")
    app_id: str = Field(default="streamrec", description="Kafka consumer group id of the workers.")
    topic_partitions: int = Field(
        default=4, ge=1, description="Partitions of the topics the worker creates at start where they do not exist."
    )

    http_host: str = Field(default="127.0.0.1", description="Address the worker's HTTP server binds.")
    http_port: int = Field(default=6066, ge=1, le=65535, description="Port of the worker's HTTP server.")
    http_token: SecretStr | None = Field(
        default=None,
        description="If set, /recommendations and /stats require `Authorization: Bearer <token>` "
        "(/health and /metrics stay open for probes and scrapers).",
    )

    batch_size: int = Field(default=500, ge=1, description="Most events handled as one batch.")
    batch_window_s: float = Field(
        default=0.002, gt=0,
        description="A batch is handled once no event arrived for this long (or when it is full, or at STREAMREC_BATCH_MAX_WAIT_S).",
    )
    batch_max_wait_s: float = Field(
        default=0.02, gt=0,
        description="Longest a batch keeps filling while events keep arriving (a backlog drains in full batches).",
    )
    fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=5000,
        description="How long a fetch waits for data; Faust's own 1500 ms would dominate freshness.",
    )
    send_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Longest the worker waits for the broker to acknowledge what it publishes; then it "
        "reports itself unhealthy and handles the batch again (nothing is acked before its answers are).",
    )
    session_timeout_s: float = Field(default=10.0, gt=0, description="Consumer-group session timeout.")
    stop_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Longest an orderly stop may take (e.g. leaving the group of an unreachable broker); then the "
        "worker persists its recommender's state and exits with 1, unacked input to be consumed again.",
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Consumer-group heartbeat interval.")
    auto_offset_reset: str = Field(
        default="earliest", pattern="^(earliest|latest)$", description="Where a new consumer group starts reading."
    )

    max_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Larger messages are dead-lettered unread."
    )
    max_json_depth: int = Field(default=32, ge=2, le=200, description="Deeper JSON nesting is dead-lettered (at most 200: the parser's own limit).")
    max_future_skew_s: float = Field(
        default=86_400.0, ge=0, description="Events stamped further than this in the future are dead-lettered."
    )
    popularity_flush_s: float = Field(
        default=10.0, gt=0,
        description="How often popularity is persisted and the vector store flushed (which bounds its write-ahead log).",
    )
    broker_check_s: float = Field(
        default=2.0, gt=0, description="How often /health checks that a Kafka bootstrap server is reachable."
    )
    groups_refresh_s: float = Field(
        default=300.0, gt=0,
        description="How often interest groups (k-means over user vectors) and segment counts are recomputed.",
    )

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> StreamSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"STREAMREC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "STREAMREC_KAFKA_SASL_USERNAME and STREAMREC_KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("STREAMREC_KAFKA_SSL_CERTFILE and STREAMREC_KAFKA_SSL_KEYFILE go together")
        return self

    @model_validator(mode="after")
    def _batch_wait_covers_the_window(self) -> StreamSettings:
        if self.batch_max_wait_s < self.batch_window_s:
            raise ValueError(
                f"STREAMREC_BATCH_MAX_WAIT_S ({self.batch_max_wait_s}) must be at least "
                f"STREAMREC_BATCH_WINDOW_S ({self.batch_window_s})"
            )
        return self

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def topics(self) -> list[str]:
        return [self.topic(name) for name in TOPICS]
