"""Kafka connection security from settings, for the two clients streamrec uses.

Faust (aiokafka) runs the worker; kafka-python publishes in `replay`. Both get the same
protocol, SASL mechanism, credentials and TLS material; secrets are read from `SecretStr` only
here, at the edge.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from stream.settings import StreamSettings


def ssl_context(settings: StreamSettings) -> ssl.SSLContext | None:
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile))
    return context


def faust_credentials(settings: StreamSettings):
    """`broker_credentials` for the Faust app (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings),
    )


def kafka_python_config(settings: StreamSettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer/KafkaConsumer."""
    config: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_context"] = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return config
