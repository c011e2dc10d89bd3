"""Dependency audit that needs nothing but PyPI: the installed distributions against the advisory
database that the `safety-db` package ships, with the database's age printed first.

Why this and not pip-audit: pip-audit asks PyPI's JSON API or api.osv.dev for advisories, and
neither answers from our machines. `safety-db` is a PyPI package whose wheel carries PyUp's
advisory database as JSON, so `pip download` fetches it like any dependency. Its last release
dates from July 2021: it knows nothing published since, so a clean result says only that no
installed version falls in a range known vulnerable in 2021. The command says so every time.

    .venv/bin/python -m tools.audit                 # fetch safety-db with pip, audit this interpreter
    .venv/bin/python -m tools.audit --db FILE       # a safety-db wheel or its insecure_full.json
    .venv/bin/python -m tools.audit --max-age-days 180   # exit 2 when the database is older

Exit status: 0 nothing found, 1 findings, 2 database older than --max-age-days (checked first, so
CI cannot take a stale database's silence for a clean bill).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

SAFETY_DB = "safety-db==2021.7.17"  # the last release; its data are CC BY-NC-SA 4.0 (PyUp), fetched, not vendored
MEMBER = "safety_db/insecure_full.json"


@dataclass(frozen=True)
class Database:
    source: str
    published: datetime
    advisories: dict[str, list[dict]]  # normalised package name -> advisories

    def age_days(self, now: datetime) -> int:
        return (now - self.published).days


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory_id: str
    cve: str | None
    affected: str
    text: str


def normalise(name: str) -> str:
    """PEP 503 name normalisation, so "PyYAML" and "pyyaml" are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_database(raw: dict, source: str) -> Database:
    meta = raw.get("$meta") or {}
    if "timestamp" not in meta:
        raise ValueError(f"{source}: no $meta.timestamp, not a safety-db insecure_full.json")
    advisories: dict[str, list[dict]] = {}
    for name, entries in raw.items():
        if name != "$meta":
            advisories.setdefault(normalise(name), []).extend(entries)
    return Database(source, datetime.fromtimestamp(meta["timestamp"], timezone.utc), advisories)


def load_database(path: Path) -> Database:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return parse_database(json.loads(wheel.read(MEMBER)), path.name)
    return parse_database(json.loads(path.read_text()), path.name)


def fetch_database(requirement: str = SAFETY_DB) -> Database:
    """Download the safety-db wheel with pip (the configured index, no install) and read it."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", folder, requirement], check=True)
        wheels = list(Path(folder).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"pip download {requirement} gave {len(wheels)} wheels, expected 1")
        return load_database(wheels[0])


def installed() -> list[tuple[str, str]]:
    return sorted({(d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"]})


def audit(packages: Iterable[tuple[str, str]], db: Database) -> tuple[list[Finding], list[str]]:
    """Findings, and the packages whose version or advisory ranges could not be parsed."""
    findings, unparsed = [], []
    for name, version in packages:
        entries = db.advisories.get(normalise(name), [])
        if not entries:
            continue
        try:
            parsed = Version(version)
        except InvalidVersion:
            unparsed.append(f"{name} {version}: not a PEP 440 version")
            continue
        for entry in entries:
            for spec in entry.get("specs") or [entry.get("v", "")]:
                try:
                    hit = SpecifierSet(spec).contains(parsed, prereleases=True)
                except InvalidSpecifier:
                    unparsed.append(f"{name}: advisory {entry.get('id')} range {spec!r}")
                    continue
                if hit:
                    findings.append(Finding(name, version, entry.get("id", "?"), entry.get("cve"), spec,
                                            " ".join(str(entry.get("advisory", "")).split())))
                    break
    return findings, unparsed


def report(db: Database, packages: list[tuple[str, str]], findings: list[Finding], unparsed: list[str],
           now: datetime) -> str:
    age = db.age_days(now)
    covered = sum(1 for name, _ in packages if normalise(name) in db.advisories)
    lines = [
        f"advisory database: {db.source}, published {db.published:%Y-%m-%d} ({age} days old, {age / 365.25:.1f} years)",
        f"  {sum(map(len, db.advisories.values()))} advisories on {len(db.advisories)} packages; "
        f"{len(packages)} installed distributions, {covered} of them named in the database",
        f"  LIMITATION: advisories published after {db.published:%Y-%m-%d} are missing. A clean result means no installed",
        "  version lies in a range known vulnerable then; it says nothing about anything disclosed since.",
    ]
    named = sorted(name for name, _ in packages if normalise(name) in db.advisories)
    if named:
        lines.append(f"  checked against it: {', '.join(named)}")
    if unparsed:
        lines += ["not checked:"] + [f"  {u}" for u in unparsed]
    if not findings:
        lines.append("findings: none")
    for f in findings:
        lines.append(f"FINDING {f.package} {f.version}: {f.advisory_id} {f.cve or ''} affected {f.affected}".rstrip())
        lines.append(f"  {f.text[:300]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a safety-db wheel or insecure_full.json (default: fetch with pip)")
    parser.add_argument("--max-age-days", type=int, help="exit 2 when the database is older than this")
    args = parser.parse_args(argv)
    db = load_database(args.db) if args.db else fetch_database()
    now = datetime.now(timezone.utc)
    packages = installed()
    findings, unparsed = audit(packages, db)
    print(report(db, packages, findings, unparsed, now))
    if args.max_age_days is not None and db.age_days(now) > args.max_age_days:
        print(f"database older than --max-age-days {args.max_age_days}: failing", file=sys.stderr)
        return 2
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
