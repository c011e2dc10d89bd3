"""The evaluation report: a short markdown page and a bar chart of the metrics per system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTTED = ("hr@10", "ndcg@10", "mrr", "coverage")


def plot_metrics(results: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """One group of bars per metric, one bar per system (systems that ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [name for name, r in results.items() if "error" not in r]
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, PLOTTED):
        values = [results[s][metric] for s in systems]
        bars = ax.bar(range(len(systems)), values, color=[colors[i % len(colors)] for i in range(len(systems))])
        ax.set_title(metric.upper() if metric != "coverage" else "coverage")
        ax.set_xticks(range(len(systems)), systems, rotation=35, ha="right", fontsize=8)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.margins(y=0.15)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| system | HR@10 | NDCG@10 | MRR | coverage | cases | train s | eval s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error'].splitlines()[0]} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['mrr']:.4f} | {r['coverage']:.4f} "
            f"| {r.get('cases', '')} | {r['train_s']:.1f} | {r['eval_s']:.1f} |"
        )
    return lines


def write_report(result: dict[str, Any], folder: Path) -> Path:
    """``folder/report.md``, ``folder/metrics.png`` and ``folder/result.json``; returns the page."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dataset, protocol, results = result["dataset"], result["protocol"], result["results"]
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"{dataset['name']}: full ranking, exclude_seen={protocol['exclude_seen']}"
    plot = plot_metrics(results, folder / "metrics.png", title)

    lines = [
        f"# Offline evaluation: {dataset['name']}",
        "",
        f"{dataset['users']} users, {dataset['items']} items, {dataset['interactions']} interactions; "
        f"unit: {protocol['unit']}; {protocol['test_cases']} test cases "
        f"({protocol['users_without_targets']} users without a target left).",
        "",
        f"Protocol: {protocol['split']}. {protocol['ranking']}. Exclusion: {protocol['exclusion']}. "
        f"{protocol['basket_scoring']}. Training data: {protocol['training_data']}.",
        "",
        *_table(results),
        "",
        f"![metrics per system]({plot.name})",
        "",
    ]
    shown = ("epochs", "best_epoch", "max_epochs", "stopped", "train_cpu_s", "total_s", "note")
    details = {name: {k: v for k, v in r.items() if k in shown} for name, r in results.items()}
    details = {k: v for k, v in details.items() if v}
    if details:
        lines += ["## Training", ""]
        lines += [f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in d.items()) for name, d in details.items()]
        lines.append("")
    for section, title in (("cold_start", "Cold start"),):
        if result.get(section):
            lines += [f"## {title}", ""]
            for name, block in result[section].items():
                lines += [f"### {name}", "", block.get("protocol", ""), "", *_table(block["results"]), ""]
                # The comparisons the targets are stated in (ratios), and choices made on validation.
                facts = {k: v for k, v in block.items() if "_over_" in k or k == "match_weight"}
                if facts:
                    lines += [", ".join(f"{k}: {v}" for k, v in facts.items()), ""]
                if block.get("boost_tradeoff"):
                    lines += [
                        "New items' vectors lengthened by a factor, same model and cases:",
                        "",
                        "| factor | new items HR@10 | warm targets HR@10 | validation: new items HR@10 "
                        "| validation NDCG@10 (whole baskets) |",
                        "|---|---|---|---|---|",
                        *(f"| {t['factor']:.1f} | {t['new_items_hr@10']:.4f} | {t['warm_targets_hr@10']:.4f} "
                          f"| {t['validation_new_items_hr@10']:.4f} | {t['validation_ndcg@10']:.4f} |"
                          for t in block["boost_tradeoff"]),
                        "",
                    ]
                if block.get("sibling_tradeoff"):
                    lines += [
                        f"New items placed by a text sibling (served: from a cosine of {block['sibling_similarity']}, "
                        f"mixed in over a ramp of {block.get('sibling_ramp', 0.0)} below it):",
                        "",
                        "| sibling from cosine | ramp | new items by sibling | mixed | new items HR@10 | warm targets HR@10 "
                        "| validation: new items HR@10 | validation NDCG@10 (whole baskets) |",
                        "|---|---|---|---|---|---|---|---|",
                        *(f"| {t['min_similarity'] if t['min_similarity'] is not None else 'none'} | {t['ramp']} "
                          f"| {t['placed_by_sibling']} | {t['mixed_with_sibling']} | {t['new_items_hr@10']:.4f} "
                          f"| {t['warm_targets_hr@10']:.4f} | {t['validation_new_items_hr@10']:.4f} "
                          f"| {t['validation_ndcg@10']:.4f} |" for t in block["sibling_tradeoff"]),
                        "",
                    ]
    page = folder / "report.md"
    page.write_text("\n".join(lines))
    return page
