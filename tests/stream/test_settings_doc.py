from pathlib import Path

import pytest
from pydantic import ValidationError

from inference.settings import InferenceSettings
from stream.settings import StreamSettings
from stream.settings_doc import COMPONENTS, with_settings_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_code():
    text = README.read_text()
    assert with_settings_block(text) == text, "run `streamrec settings --readme README.md`"


def test_every_setting_is_documented():
    for _, model in COMPONENTS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_settings_come_from_prefixed_environment_variables(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("STREAMREC_TOPIC_PREFIX", "shop1.")
    monkeypatch.setenv("STREAMREC_QDRANT_URL", "http://qdrant:6333")
    monkeypatch.setenv("STREAMREC_QDRANT_API_KEY", "s3cret")
    monkeypatch.setenv("STREAMREC_DATA_DIR", "/var/lib/streamrec")
    monkeypatch.setenv("STREAMREC_HTTP_PORT", "8080")
    stream, inference = StreamSettings(), InferenceSettings()
    assert stream.topic("events") == "shop1.events" and stream.http_port == 8080
    assert inference.qdrant_url == "http://qdrant:6333" and str(inference.data_dir) == "/var/lib/streamrec"
    assert "s3cret" not in repr(inference) and inference.qdrant_api_key.get_secret_value() == "s3cret"


def test_a_bad_setting_names_its_variable(monkeypatch):
    monkeypatch.setenv("STREAMREC_HTTP_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="http_port"):
        StreamSettings()


def test_a_batch_cannot_close_at_its_longest_wait_before_its_quiet_gap(monkeypatch):
    monkeypatch.setenv("STREAMREC_BATCH_WINDOW_S", "0.05")
    monkeypatch.setenv("STREAMREC_BATCH_MAX_WAIT_S", "0.01")
    with pytest.raises(ValidationError, match="STREAMREC_BATCH_MAX_WAIT_S"):
        StreamSettings()
