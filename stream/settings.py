"""Settings of the Kafka side: broker, topics, batching, limits on input, HTTP.

Every field can be set by an environment variable `STREAMREC_<FIELD>` (case-insensitive).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers (host:port)."
    )
    topic_prefix: str = Field(default="streamrec.", description="Prefix of every topic name.")
    app_id: str = Field(default="streamrec", description="Kafka consumer group id of the workers.")
    topic_partitions: int = Field(default=4, ge=1, description="Partitions of the topics the worker declares.")

    http_host: str = Field(default="127.0.0.1", description="Address the worker's HTTP server binds.")
    http_port: int = Field(default=6066, ge=1, le=65535, description="Port of the worker's HTTP server.")

    batch_size: int = Field(default=500, ge=1, description="Most events handled as one batch.")
    batch_window_s: float = Field(
        default=0.002, gt=0, description="Longest wait for a batch to fill before it is handled."
    )
    fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=5000,
        description="How long a fetch waits for data; Faust's own 1500 ms would dominate freshness.",
    )
    session_timeout_s: float = Field(default=10.0, gt=0, description="Consumer-group session timeout.")
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Consumer-group heartbeat interval.")
    auto_offset_reset: str = Field(
        default="earliest", pattern="^(earliest|latest)$", description="Where a new consumer group starts reading."
    )

    max_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Larger messages are dead-lettered unread."
    )
    max_json_depth: int = Field(default=32, ge=2, description="Deeper JSON nesting is dead-lettered.")
    max_future_skew_s: float = Field(
        default=86_400.0, ge=0, description="Events stamped further than this in the future are dead-lettered."
    )
    popularity_flush_s: float = Field(default=10.0, gt=0, description="How often popularity is persisted.")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"
