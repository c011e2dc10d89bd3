"""The published peer: RecBole 1.2.1's SASRec, run in its own virtual environment.

RecBole 1.2.1 needs numpy < 2 (it uses ``np.float_``), hence pandas < 3 and pyarrow < 20, which
cannot live in streamrec's environment; and under torch >= 2.6 its own checkpoints load only
with ``torch.load(..., weights_only=False)``. So it runs as a subprocess of a separate venv
(created on demand under ``<data_dir>/peer-venv``), fed the protocol's split as RecBole atomic
files:

* ``<name>.train.inter``: one row per training target: the items before it (last ``max_len``)
  and the target. For baskets, the prefix is the past baskets and each item of the basket is a
  target (as streamrec trains), never a half-seen basket.
* ``<name>.valid.inter``: history -> validation unit items (RecBole's early stopping).
* ``<name>.test.inter``: history + validation -> test unit items (unused by training; it keeps
  every target item in RecBole's vocabulary).
* ``<name>.item``: the whole catalog, so every item gets an id.

RecBole trains SASRec (CE loss over all items), keeps its best validation epoch, and then the
runner (:mod:`training.peer_runner`) scores **our** test cases with the trained model and ranks
them with **our** code (:func:`training.metrics.rank_items`), with the same exclusion as every
other system. Note: RecBole's own full-sort evaluation masks no history items for sequential
models (S3-Rec's code masks them); here the exclusion is applied by our ranking, identically for
every system.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.file_lock import exclusive_lock
from training.split import EvalCases, ProtocolSplit

PEER_REQUIREMENTS = ("torch==2.13.0", "numpy<2", "pandas<3", "pyarrow<20", "recbole==1.2.1")
RUNNER = Path(__file__).with_name("peer_runner.py")
INTER_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
# RecBole parses tokens itself; keep our ids free of its separators.
_BAD_TOKEN = (" ", "\t", "\n")


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or run; the message says why."""


@dataclass(frozen=True)
class PeerSettings:
    epochs: int = 5
    max_len: int = 50
    batch_size: int = 256
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    lr: float = 1e-3
    stopping_step: int = 3
    threads: int = 2
    seed: int = 2020
    timeout_s: float | None = None


# --------------------------------------------------------------------------------------------
# The peer's environment


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(venv: Path, *, python: str | None = None) -> Path:
    """Create ``venv`` with :data:`PEER_REQUIREMENTS` once (a stamp file names them); return
    its python. Raises :class:`PeerUnavailable` with pip's last lines when the install fails."""
    venv = Path(venv)
    stamp = venv / ".streamrec-peer"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return peer_python(venv)
    with exclusive_lock(venv.with_name(venv.name + ".lock")):
        if stamp.is_file() and stamp.read_text() == wanted:
            return peer_python(venv)
        base = python or getattr(sys, "_base_executable", None) or sys.executable
        steps = [
            [base, "-m", "venv", "--clear", str(venv)],
            [str(peer_python(venv)), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
            [str(peer_python(venv)), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True)
            except OSError as exc:
                raise PeerUnavailable(f"installing the RecBole peer failed at `{' '.join(step)}`: {exc}") from exc
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise PeerUnavailable(f"installing the RecBole peer failed at `{' '.join(step)}`:\n{tail}")
        stamp.write_text(wanted)
    return peer_python(venv)


# --------------------------------------------------------------------------------------------
# Atomic files


def _token(item_id: str) -> str:
    if any(c in item_id for c in _BAD_TOKEN):
        raise ValueError(f"item id {item_id!r} holds whitespace, which RecBole atomic files cannot carry")
    return item_id


def _rows(
    split: ProtocolSplit, user: int, past: list[list[int]], targets: list[int], max_len: int
) -> list[str]:
    prefix = [split.item_ids[i] for unit in past for i in unit][-max_len:]
    if not prefix:
        return []  # SASRec needs at least one item before its target
    seq = " ".join(_token(t) for t in prefix)
    name = split.users[user]
    return [f"{name}\t{seq}\t{_token(split.item_ids[t])}\n" for t in targets]


def write_atomic_files(split: ProtocolSplit, folder: Path, name: str, max_len: int = 50) -> dict[str, int]:
    """Write the four files of the module docstring to ``folder/name/``; return row counts."""
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "valid": 0, "test": 0}
    handles = {part: (out / f"{name}.{part}.inter").open("w") for part in counts}
    try:
        for handle in handles.values():
            handle.write(INTER_HEADER)
        for u in range(split.n_users):
            units = split.units[u]
            history = units[:-2]
            for b in range(len(history)):
                rows = _rows(split, u, history[:b], list(dict.fromkeys(history[b])), max_len)
                handles["train"].writelines(rows)
                counts["train"] += len(rows)
            for part, past, target in (("valid", units[:-2], units[-2]), ("test", units[:-1], units[-1])):
                rows = _rows(split, u, past, list(dict.fromkeys(target)), max_len)
                handles[part].writelines(rows)
                counts[part] += len(rows)
    finally:
        for handle in handles.values():
            handle.close()
    with (out / f"{name}.item").open("w") as handle:
        handle.write("item_id:token\n")
        handle.writelines(f"{_token(item)}\n" for item in split.item_ids)
    return counts


def write_cases(split: ProtocolSplit, cases: EvalCases, path: Path, max_len: int) -> None:
    """The test cases for the runner: each user's known past (item ids, last ``max_len``), the
    item indices to exclude and the targets."""
    payload = {
        "item_ids": split.item_ids,
        "cases": [
            {
                "past": [split.item_ids[i] for unit in split.inputs(int(u), cases.phase) for i in unit][-max_len:],
                "exclude": cases.exclude[n].tolist(),
                "targets": cases.targets[n].tolist(),
            }
            for n, u in enumerate(cases.users)
        ],
    }
    Path(path).write_text(json.dumps(payload))


# --------------------------------------------------------------------------------------------
# Running it


@dataclass
class PeerRun:
    top: np.ndarray
    ranks: list[np.ndarray]
    info: dict[str, Any]
    # phase -> (cases, n_items) raw scores, for the phases asked for with ``score_phases``
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def new_run_dir(workdir: Path, name: str) -> Path:
    """A fresh folder for one peer run, named by its start time. Unique even for runs started in
    the same second: two evaluations (seeds side by side) once shared one, and both trained on
    whichever config.json was written last."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-{int(time.time())}-", dir=workdir))


def run_peer(
    split: ProtocolSplit,
    cases: EvalCases,
    workdir: Path,
    settings: PeerSettings = PeerSettings(),
    *,
    venv: Path | None = None,
    progress: bool = True,
    score_phases: Mapping[str, EvalCases] | None = None,
) -> PeerRun:
    """Train RecBole SASRec on ``split`` in its own venv and rank ``cases`` with our code; also
    return its raw scores of all items for each of ``score_phases``' cases."""
    # Absolute (not resolved: a venv's python is a symlink that must stay one): the runner's
    # working folder is its run folder.
    workdir = Path(workdir).absolute()
    python = ensure_peer_venv(Path(venv).absolute() if venv else workdir.parent / "peer-venv")
    name = "streamrec_" + hashlib.sha256(split.name.encode()).hexdigest()[:8]
    run_dir = new_run_dir(workdir, name)
    data_dir = run_dir / "data"
    rows = write_atomic_files(split, data_dir, name, settings.max_len)
    write_cases(split, cases, run_dir / "cases.json", settings.max_len)
    score_cases = {}
    for phase, phase_cases in (score_phases or {}).items():
        score_cases[phase] = str(run_dir / f"cases-{phase}.json")
        write_cases(split, phase_cases, Path(score_cases[phase]), settings.max_len)
    config = {
        "dataset": name,
        "data_path": str(data_dir),
        "checkpoint_dir": str(run_dir / "checkpoints"),
        "cases": str(run_dir / "cases.json"),
        "output": str(run_dir / "ranks.npz"),
        "info": str(run_dir / "info.json"),
        "score_cases": score_cases,
        "repo_root": str(Path(__file__).resolve().parent.parent),
        "progress": progress,
        **{key: getattr(settings, key) for key in PeerSettings.__dataclass_fields__ if key != "timeout_s"},
    }
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    env = {
        **os.environ,
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
        "OMP_NUM_THREADS": str(settings.threads),
        "PYTHONPATH": "",
    }
    log_path = run_dir / "peer.log"
    with log_path.open("w") as log:
        try:
            done = subprocess.run(
                [str(python), str(RUNNER), str(run_dir / "config.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=run_dir,  # RecBole writes log/ and log_tensorboard/ into its working folder
                timeout=settings.timeout_s,
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerUnavailable(f"the RecBole peer ran past {settings.timeout_s}s; its log: {log_path}") from exc
        except OSError as exc:
            raise PeerUnavailable(f"cannot start the RecBole peer with {python}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text().strip().splitlines()[-15:])
        raise PeerUnavailable(f"the RecBole peer exited with {done.returncode}; log {log_path}:\n{tail}")
    data = np.load(run_dir / "ranks.npz")
    bounds = np.cumsum(data["lengths"])[:-1]
    info = json.loads((run_dir / "info.json").read_text())
    info["rows"] = rows
    info["log"] = str(log_path)
    scores = {}
    for phase in score_cases:
        path = run_dir / f"scores-{phase}.npy"
        scores[phase] = np.load(path)
        path.unlink()  # tens of MB per phase; the run folder keeps only what describes the run
    return PeerRun(top=data["top"], ranks=np.split(data["ranks"], bounds), info=info, scores=scores)
