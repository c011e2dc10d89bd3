"""`streamrec ab-report`: per-variant online metrics of an A/B test, read from the topics.

Reads `recommendations` (which variant served each `rec_id`) and `events` (impressions, clicks
and purchases carrying a `rec_id`) from the beginning up to their current end, so the report is
a consistent snapshot of everything logged so far; malformed records are skipped and counted
(the worker has already dead-lettered them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from pydantic import ValidationError

from inference.experiments import VariantReport, report, tally
from inference.schemas import Event, Recommendation
from stream.settings import StreamSettings
from stream.topic_reader import read_to_end


def _parse(values: Iterator[bytes], model, skipped: dict[str, int], name: str) -> Iterator:
    for value in values:
        try:
            yield model.from_wire(value)
        except (ValidationError, ValueError):
            skipped[name] = skipped.get(name, 0) + 1


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def format_table(rows: list[VariantReport]) -> str:
    head = (f"{'variant':<14}{'recs':>8}{'users':>7}{'impr':>8}{'clicks':>8}  {'CTR [95% CI]':<24}"
            f"{'buys':>6}  {'conversion [95% CI]':<24}{'revenue':>10}  revenue/impression [95% CI]")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.variant:<14}{r.recommendations:>8}{r.users:>7}{r.impressions:>8}{r.clicks:>8}  "
            f"{_pct(r.ctr) + ' [' + _pct(r.ctr_ci[0]) + ', ' + _pct(r.ctr_ci[1]) + ']':<24}{r.purchases:>6}  "
            f"{_pct(r.conversion) + ' [' + _pct(r.conversion_ci[0]) + ', ' + _pct(r.conversion_ci[1]) + ']':<24}"
            f"{r.revenue:>10.2f}  {r.revenue_per_impression:.3f} "
            f"[{r.revenue_per_impression_ci[0]:.3f}, {r.revenue_per_impression_ci[1]:.3f}]"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--timeout", type=float, default=120.0, help="give up reading a topic after this many seconds")


def run(args: argparse.Namespace) -> int:
    settings = StreamSettings()
    skipped: dict[str, int] = {}
    recs = _parse(read_to_end(settings, settings.topic("recommendations"), args.timeout), Recommendation, skipped,
                  "recommendations")
    recommendations = list(recs)
    events = _parse(read_to_end(settings, settings.topic("events"), args.timeout), Event, skipped, "events")
    rows = report(tally(recommendations, events))
    if args.json:
        print(json.dumps({"variants": [r.__dict__ for r in rows], "skipped": skipped}, indent=2, default=list))
    else:
        print(format_table(rows) if rows else "no recommendations with feedback yet")
        if skipped:
            print(f"skipped malformed records: {skipped}")
    return 0
