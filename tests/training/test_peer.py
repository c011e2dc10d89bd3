"""The RecBole peer's input files (the run itself needs its own venv and minutes: not tested here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.peer import INTER_HEADER, PEER_REQUIREMENTS, new_run_dir, write_atomic_files, write_cases
from training.split import ProtocolSplit, eval_cases


def split() -> ProtocolSplit:
    return ProtocolSplit(
        name="toy",
        unit="basket",
        item_ids=["i1", "i2", "i3", "i4", "i5"],
        users=["u1", "u2"],
        units=[
            [[0, 1], [2], [3, 0], [4]],
            [[1], [2, 2]],
        ],
    )


def read(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == INTER_HEADER
    return [line.split("\t") for line in lines[1:]]


def test_atomic_files_follow_the_split_and_never_split_a_basket(tmp_path: Path) -> None:
    counts = write_atomic_files(split(), tmp_path, "toy", max_len=50)
    folder = tmp_path / "toy"

    # u1's history: [i1 i2] then [i3]; the first basket has no prefix, so only i3 is a target.
    assert read(folder / "toy.train.inter") == [["u1", "i1 i2", "i3"]]
    # Validation: history -> each item of the validation basket (u2 has no history: no row).
    assert read(folder / "toy.valid.inter") == [["u1", "i1 i2 i3", "i4"], ["u1", "i1 i2 i3", "i1"]]
    # Test: history + validation -> each distinct item of the test basket.
    assert read(folder / "toy.test.inter") == [["u1", "i1 i2 i3 i4 i1", "i5"], ["u2", "i2", "i3"]]
    assert counts == {"train": 1, "valid": 2, "test": 2}
    assert (folder / "toy.item").read_text().splitlines() == ["item_id:token", "i1", "i2", "i3", "i4", "i5"]


def test_prefixes_are_cut_to_max_len(tmp_path: Path) -> None:
    write_atomic_files(split(), tmp_path, "toy", max_len=2)
    assert read(tmp_path / "toy" / "toy.test.inter")[0] == ["u1", "i4 i1", "i5"]


def test_ids_with_whitespace_are_refused(tmp_path: Path) -> None:
    bad = ProtocolSplit(name="b", unit="item", item_ids=["a b", "c"], users=["u"], units=[[[0], [1], [0]]])
    with pytest.raises(ValueError, match="whitespace"):
        write_atomic_files(bad, tmp_path, "b")


def test_cases_file_carries_past_exclusion_and_targets(tmp_path: Path) -> None:
    s = split()
    cases = eval_cases(s, "test")
    write_cases(s, cases, tmp_path / "cases.json", max_len=3)
    payload = json.loads((tmp_path / "cases.json").read_text())

    assert payload["item_ids"] == s.item_ids
    assert payload["cases"][0] == {"past": ["i3", "i4", "i1"], "exclude": [0, 1, 2, 3], "targets": [4]}
    assert payload["cases"][1] == {"past": ["i2"], "exclude": [1], "targets": [2]}
    assert np.array_equal(cases.users, [0, 1])


def test_peer_requirements_pin_recbole_and_its_old_stack() -> None:
    assert "recbole==1.2.1" in PEER_REQUIREMENTS
    assert "numpy<2" in PEER_REQUIREMENTS and "torch==2.13.0" in PEER_REQUIREMENTS


def test_a_peer_that_cannot_start_is_reported_not_raised_raw(tmp_path: Path) -> None:
    from training.peer import PeerSettings, PeerUnavailable, run_peer

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".streamrec-peer").write_text("\n".join(PEER_REQUIREMENTS))  # "installed", but no python
    s = split()
    with pytest.raises(PeerUnavailable, match="cannot start"):
        run_peer(s, eval_cases(s, "test"), tmp_path / "runs", PeerSettings(epochs=1), venv=venv)


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path) -> None:
    workdir = tmp_path / "peer-runs"  # created on first use
    first, second = new_run_dir(workdir, "streamrec_ab"), new_run_dir(workdir, "streamrec_ab")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == workdir and first.name.startswith("streamrec_ab-")
