"""What every bench program prints: a header (command, date, machine, load), Markdown tables, a
footer (load again), and the statistics they share (percentiles, median and spread of repetitions).

Benchmarks are programs, not tests: they print numbers and never assert on time. The machine is
shared, so each program measures its baseline in the same run and prints the ratio, repeats
every measurement (at least 3 times) and reports the median with the spread (min–max).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

MIN_REPEATS = 3


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU ticks of the machine so far, from /proc/stat: on a shared VM the
    hypervisor's steal is the noise that makes two runs of the same code differ."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    return sum(fields[:8]), fields[7]  # user nice system idle iowait irq softirq steal


_ticks_at_start = (0, 0)


def header(title: str) -> float:
    """Print what ran, when, where and under what load; returns the start time (perf_counter)."""
    command = shlex.join([os.path.relpath(sys.argv[0]) if sys.argv[0].endswith(".py") else sys.argv[0], *sys.argv[1:]])
    print(f"## {title}\n")
    print(f"- command: `{command}`")
    print(f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"- machine: {os.cpu_count()} cores, {_memory_gib():.0f} GiB, {platform.machine()}, "
          f"Python {platform.python_version()}")
    print(f"- code: {_git_state()}")
    print(f"- load average at start (1/5/15 min): {loadavg()}", flush=True)
    global _ticks_at_start
    _ticks_at_start = cpu_ticks()
    return time.perf_counter()


def _git_state() -> str:
    """HEAD and whether the working tree differs from it (others may be editing concurrently)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return f"git {head or '?'}" + (" + uncommitted changes in the working tree" if dirty else "")


def footer(started: float) -> None:
    print(f"\n- load average at end (1/5/15 min): {loadavg()}")
    total, stolen = (now - then for now, then in zip(cpu_ticks(), _ticks_at_start))
    if total > 0:
        print(f"- CPU time stolen by the hypervisor during the run: {stolen / total:.1%} of the machine's")
    print(f"- wall time: {time.perf_counter() - started:.0f} s", flush=True)


def note(text: str) -> None:
    print(f"- {text}", flush=True)


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float]:
    if len(values) == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def spread(values: Sequence[float], digits: int = 1) -> str:
    """`median (min–max)` of repeated measurements; NaN-only input prints as n/a."""
    arr = np.asarray([v for v in values if v == v], dtype=np.float64)
    if arr.size == 0:
        return "n/a"
    med, lo, hi = float(np.median(arr)), float(arr.min()), float(arr.max())
    if arr.size == 1:
        return _fmt(med, digits)
    return f"{_fmt(med, digits)} ({_fmt(lo, digits)}–{_fmt(hi, digits)})"


def median(values: Sequence[float]) -> float:
    arr = [v for v in values if v == v]
    return float(np.median(arr)) if arr else float("nan")


def ratio(system: float, baseline: float, digits: int = 2) -> str:
    if not baseline or baseline != baseline or system != system:
        return "n/a"
    return f"{system / baseline:.{digits}f}×"


def _fmt(value: float, digits: int) -> str:
    if value != value:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes as is into an issue or results file)."""
    cells = [[str(c) for c in columns]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print()
    print(line(cells[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print(line(r))
    print(flush=True)


def proc_status(pid: int | None = None) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status, in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    fields = {}
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (the worker and its recommender process)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            for task in os.listdir(f"/proc/{tree[i]}/task"):
                with open(f"/proc/{tree[i]}/task/{task}/children") as f:
                    tree.extend(int(c) for c in f.read().split())
        except OSError:  # gone meanwhile
            pass
        i += 1
    return tree


def tree_status(pid: int) -> dict[str, int]:
    """`proc_status` summed over the process and its descendants (peaks: the sum of each one's)."""
    total: dict[str, int] = {}
    for member in process_tree(pid):
        try:
            for key, value in proc_status(member).items():
                total[key] = total.get(key, 0) + value
        except OSError:
            pass
    return total


def rss_bytes(pid: int | None = None, *, tree: bool = False) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process (`tree`: with its descendants), in bytes: resident now and its peak."""
    fields = tree_status(pid) if tree and pid else proc_status(pid)
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def rss_split(pid: int | None = None, *, tree: bool = False) -> str:
    """Resident memory split into anonymous (heap, owned) and file-backed (mapped files, reclaimable)."""
    fields = tree_status(pid) if tree and pid else proc_status(pid)
    return (f"{mib(fields.get('VmRSS', 0))} (anonymous {mib(fields.get('RssAnon', 0))}, "
            f"file-backed {mib(fields.get('RssFile', 0))})")
