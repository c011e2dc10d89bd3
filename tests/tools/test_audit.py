"""tools/audit.py against a small hand-made database: no network, no pip."""

import json
import zipfile
from datetime import datetime, timezone

import pytest

from tools.audit import MEMBER, audit, load_database, main, parse_database, report

PUBLISHED = datetime(2021, 7, 1, 6, 0, 2, tzinfo=timezone.utc)
RAW = {
    "$meta": {"advisory": "test", "timestamp": int(PUBLISHED.timestamp())},
    "Jinja2": [{"advisory": "ReDoS in urlize.", "cve": "CVE-2020-28493", "id": "pyup.io-39525",
                "specs": [">=0.0.0,<2.11.3"], "v": ">=0.0.0,<2.11.3"}],
    "aiohttp": [{"advisory": "Open redirect.", "cve": None, "id": "pyup.io-1", "specs": ["<0.16.3", ">=3.0,<3.7.4"], "v": ""}],
    "odd": [{"advisory": "Bad range.", "cve": None, "id": "pyup.io-2", "specs": ["not a range"], "v": ""}],
}


def test_findings_match_normalised_names_and_any_range():
    db = parse_database(RAW, "test.json")
    findings, unparsed = audit([("jinja2", "2.10"), ("aiohttp", "3.7.3"), ("aiohttp_extra", "1.0")], db)
    assert [(f.package, f.advisory_id, f.affected) for f in findings] == [
        ("jinja2", "pyup.io-39525", ">=0.0.0,<2.11.3"), ("aiohttp", "pyup.io-1", ">=3.0,<3.7.4")]
    assert not unparsed


def test_fixed_and_local_versions_are_clean():
    db = parse_database(RAW, "test.json")
    assert audit([("Jinja2", "3.1.6"), ("aiohttp", "3.14.5"), ("aiohttp", "3.7.4+cpu")], db) == ([], [])


def test_what_cannot_be_parsed_is_reported_not_skipped_silently():
    db = parse_database(RAW, "test.json")
    findings, unparsed = audit([("odd", "1.0"), ("Jinja2", "not-a-version")], db)
    assert not findings and len(unparsed) == 2


def test_report_states_the_database_age_and_its_limitation():
    db = parse_database(RAW, "test.json")
    now = datetime(2026, 11, 29, tzinfo=timezone.utc)
    text = report(db, [("Jinja2", "3.1.6")], [], [], now)
    assert "published 2021-07-01 (1976 days old, 5.4 years)" in text
    assert "advisories published after 2021-07-01 are missing" in text and "findings: none" in text


def test_wheel_and_json_load_alike(tmp_path):
    (tmp_path / "db.json").write_text(json.dumps(RAW))
    with zipfile.ZipFile(tmp_path / "safety_db-0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(MEMBER, json.dumps(RAW))
    a, b = load_database(tmp_path / "db.json"), load_database(tmp_path / "safety_db-0-py3-none-any.whl")
    assert a.published == b.published == PUBLISHED and a.advisories == b.advisories
    with pytest.raises(ValueError, match="timestamp"):
        parse_database({"x": []}, "nope.json")


def test_exit_status(tmp_path, monkeypatch, capsys):
    (tmp_path / "db.json").write_text(json.dumps(RAW))
    monkeypatch.setattr("tools.audit.installed", lambda: [("jinja2", "3.1.6")])
    assert main(["--db", str(tmp_path / "db.json")]) == 0
    assert main(["--db", str(tmp_path / "db.json"), "--max-age-days", "90"]) == 2  # stale: never a silent pass
    monkeypatch.setattr("tools.audit.installed", lambda: [("jinja2", "2.10")])
    assert main(["--db", str(tmp_path / "db.json")]) == 1
    assert "FINDING jinja2 2.10: pyup.io-39525 CVE-2020-28493" in capsys.readouterr().out
