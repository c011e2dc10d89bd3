"""`streamrec evaluate`: the offline protocol on a file, as a table or one JSON object.

Kept apart from :mod:`training.evaluate` so that building the command line imports no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMATS = ("online-retail", "sequences")
BASELINE_NAMES = ("popularity", "cooccurrence", "sasrec")


def _baselines(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        choices = ", ".join(BASELINE_NAMES)
        raise argparse.ArgumentTypeError(f"unknown baselines {unknown}; choose among {choices}")
    return names


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="online-retail (UCI log) or sequences (S3-Rec)")
    p.add_argument("--path", type=Path, default=None,
                   help="the file (default: the shared Online Retail parquet / S3-Rec Beauty.txt.gz)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--baselines", type=_baselines, default=BASELINE_NAMES,
                   help="comma-separated baselines run beside streamrec "
                        "(default: popularity,cooccurrence,sasrec; 'none': none)")
    p.add_argument("--epochs", type=int, default=None,
                   help="streamrec's maximum epochs (early stopping picks the best)")
    p.add_argument("--peer-epochs", type=int, default=5, help="RecBole SASRec's maximum epochs (slow on CPU)")
    p.add_argument("--peer-timeout", type=float, default=None, help="give up on the peer after this many seconds")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop streamrec's training after about this many seconds "
                        "(default: 1500 for item sequences, none for baskets)")
    p.add_argument("--max-users", type=int, default=0, help="evaluate on this many users drawn at random (0: all)")
    p.add_argument("--include-seen", action="store_true",
                   help="rank already-bought items too (default: exclude them from ranking and targets)")
    p.add_argument("--bought-as-negatives", action="store_true",
                   help="keep a basket's already-bought items in streamrec's training softmax as negatives "
                        "(default: left out; better warm ranking, new items rank lower)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start evaluations")
    p.add_argument("--no-served", action="store_true",
                   help="skip the worker's own answers (the exported event encoder replayed in the serving engine)")
    p.add_argument("--export-tower", type=Path, default=None, metavar="DIR",
                   help="also write streamrec's fitted towers here, as a worker serves them (a model folder's tower/)")
    p.add_argument("--cold-fraction", type=float, default=0.1, help="share of items held out for the new-item cold start")
    p.add_argument("--report", type=Path, default=None, help="write report.md, metrics.png and result.json here")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _default_path(fmt: str) -> Path:
    from training.datasets import default_online_retail_path, default_s3rec_path

    return default_online_retail_path() if fmt == "online-retail" else default_s3rec_path()


def run_cli(args: argparse.Namespace) -> int:
    import torch

    from training.evaluate import EvaluateOptions, evaluate_split, format_table, load_split
    from training.report import write_report

    torch.set_num_threads(args.threads)
    path = args.path or _default_path(args.format)
    split = load_split(args.format, path, max_users=args.max_users, seed=args.seed)
    options = EvaluateOptions(
        baselines=args.baselines,
        exclude_seen=not args.include_seen,
        bought_out_of_softmax=not args.bought_as_negatives,
        epochs=args.epochs,
        time_budget_s=args.time_budget,
        peer_epochs=args.peer_epochs,
        peer_timeout_s=args.peer_timeout,
        cold_start=not args.no_cold_start,
        served=not args.no_served,
        export_tower=args.export_tower,
        cold_fraction=args.cold_fraction,
        progress=not args.quiet,
        seed=args.seed,
    )
    result = evaluate_split(split, options)
    result["dataset"]["path"] = str(path)
    if args.report is not None:
        page = write_report(result, args.report)
        print(f"report: {page}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    d, p = result["dataset"], result["protocol"]
    print(f"{d['name']}: {d['users']} users, {d['items']} items; unit {p['unit']}; "
          f"{p['test_cases']} test cases; exclude_seen={p['exclude_seen']}")
    print(format_table(result["results"]))
    for name, block in (result.get("cold_start") or {}).items():
        print(f"\ncold start: {name}\n{block['protocol']}")
        print(format_table(block["results"]))
    return 0
