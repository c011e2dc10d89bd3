from datetime import datetime, timedelta, timezone

import pytest

from inference.schemas import ModelUpdate
from stream.model_updates import rollback_target

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def update(version, minutes):
    return ModelUpdate(version=version, path=f"/models/{version}", dim=384, at=T + timedelta(minutes=minutes))


DEFAULT = update("shipped", 0)


def test_rollback_goes_to_the_version_that_served_before():
    assert rollback_target([update("v1", 1), update("v2", 2)], DEFAULT).version == "v1"
    assert rollback_target([update("v1", 1)], DEFAULT).version == "shipped"
    # after a rollback to v1 (re-announced later), rolling back again returns to v2
    assert rollback_target([update("v2", 2), update("v1", 3)], DEFAULT).version == "v2"


def test_rollback_to_a_named_version_and_its_errors():
    history = [update("v1", 1), update("v2", 2)]
    assert rollback_target(history, DEFAULT, "v1").path == "/models/v1"
    assert rollback_target(history, DEFAULT, "shipped").version == "shipped"
    with pytest.raises(ValueError, match="never announced"):
        rollback_target(history, DEFAULT, "v9")
    with pytest.raises(ValueError, match="already serving"):
        rollback_target([], DEFAULT)
