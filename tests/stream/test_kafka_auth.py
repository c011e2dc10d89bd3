import ssl

import faust
import pytest
from pydantic import ValidationError

from stream.kafka_auth import faust_credentials, kafka_python_config
from stream.settings import StreamSettings


def test_plaintext_by_default():
    settings = StreamSettings()
    assert faust_credentials(settings) is None
    assert kafka_python_config(settings) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_scram_reaches_both_clients_and_the_password_stays_secret():
    settings = StreamSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="streamrec",
                              kafka_sasl_password="hunter2", kafka_sasl_mechanism="SCRAM-SHA-512")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("streamrec", "hunter2", "SCRAM-SHA-512")
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.protocol.value == "SASL_SSL"
    config = kafka_python_config(settings)
    assert config["sasl_mechanism"] == "SCRAM-SHA-512" and config["sasl_plain_password"] == "hunter2"
    assert isinstance(config["ssl_context"], ssl.SSLContext)


def test_tls_only():
    creds = faust_credentials(StreamSettings(kafka_security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)


def test_sasl_without_credentials_is_a_clear_error():
    with pytest.raises(ValidationError, match="STREAMREC_KAFKA_SASL_USERNAME"):
        StreamSettings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="go together"):
        StreamSettings(kafka_ssl_certfile="/tmp/cert.pem")
