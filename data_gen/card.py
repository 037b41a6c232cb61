"""Dataset card: ``CARD.md`` with row counts, realism statistics and PNG plots (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from data_gen.feed_simulation import SimulationResult
from data_gen.follow_graph import FollowGraph
from data_gen.population import Population
from data_gen.posts import Posts
from data_gen.stats import REALISM_RANGES

PLOTS = {
    "degree_distribution.png": "Follower (in) and following (out) degree distributions, log-log",
    "item_popularity.png": "Clicks per post by popularity rank (long tail), log-log",
    "activity_over_time.png": "Impressions, engagements and active users per simulated day",
}


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Markdown table lines: row counts, then each realism statistic with its range and verdict."""
    lines = ["| quantity | value | expected range |", "|---|---|---|"]
    for table, n in manifest["row_counts"].items():
        lines.append(f"| rows: {table} | {n:,} | |")
    for kind, n in manifest.get("event_counts", {}).items():
        lines.append(f"| events: {kind} | {n:,} | |")
    stats = manifest["realism"]
    for name, value in stats.items():
        rng = manifest.get("realism_ranges", {}).get(name) or REALISM_RANGES.get(name)
        shown = f"{value:.4g}" if isinstance(value, float) else f"{value:,}"
        if rng:
            ok = rng[0] <= value <= rng[1]
            lines.append(f"| {name} | {shown} | [{rng[0]}, {rng[1]}] {'ok' if ok else 'OUT OF RANGE'} |")
        else:
            lines.append(f"| {name} | {shown} | |")
    return lines


def write_card(
    root: Path,
    manifest: dict[str, Any],
    pop: Population,
    graph: FollowGraph,
    posts: Posts,
    sim: SimulationResult,
    plots: bool = True,
) -> set[str]:
    """Write ``CARD.md`` (and the plots) into ``root``; return the relative paths written."""
    written = {"CARD.md"}
    images = []
    if plots:
        images = _plots(root, pop, graph, sim)
        written |= {f"plots/{name}" for name in images}
    cfg = manifest["config"]
    lines = [
        f"# Dataset card: {manifest['name']}",
        "",
        f"Synthetic social network from `data_gen` {manifest['generator_version']}, seed {manifest['seed']}, "
        f"{cfg['simulation']['n_days']} simulated days from {cfg['simulation']['start_date']}.",
        "Generative story: docs/data_gen.md. Hidden ground truth (latent factors, communities, behaviour "
        "parameters) is in `truth/`; models must not read it.",
        "",
        "## Summary",
        "",
        *summary_lines(manifest),
        "",
        f"Interactions layout: `{manifest['layout']['interactions']}` "
        f"({manifest['layout']['interaction_parts']} part(s)); loaders accept a file or a directory of parts.",
    ]
    if manifest.get("realism_problems"):
        lines += ["", "**Out of range:** " + "; ".join(manifest["realism_problems"])]
    if images:
        lines += ["", "## Plots", ""]
        for name in images:
            lines += [f"### {PLOTS[name]}", "", f"![{name}](plots/{name})", ""]
    (root / "CARD.md").write_text("\n".join(lines) + "\n")
    return written


def _plots(root: Path, pop: Population, graph: FollowGraph, sim: SimulationResult) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = root / "plots"
    out.mkdir()
    meta = {"Software": None}  # no version strings: identical bytes across matplotlib patch releases
    n = pop.n_users

    fig, ax = plt.subplots(figsize=(6, 4))
    for degrees, label in ((graph.in_degree(n), "in-degree (followers)"), (graph.out_degree(), "out-degree")):
        values, counts = np.unique(degrees[degrees > 0], return_counts=True)
        ax.loglog(values, counts / counts.sum(), ".", label=label, alpha=0.7)
    ax.set_xlabel("degree")
    ax.set_ylabel("share of users")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "degree_distribution.png", dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    clicks = np.sort(sim.item_clicks)[::-1]
    clicks = clicks[clicks > 0]
    if len(clicks):
        ax.loglog(np.arange(1, len(clicks) + 1), clicks)
    ax.set_xlabel("post rank")
    ax.set_ylabel("clicks")
    fig.tight_layout()
    fig.savefig(out / "item_popularity.png", dpi=90, metadata=meta)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    days = np.arange(len(sim.daily_impressions))
    ax.plot(days, sim.daily_impressions, label="impressions")
    ax.plot(days, sim.daily_engagements, label="engagements")
    ax.plot(days, sim.daily_active_users, label="active users")
    ax.set_yscale("log")
    ax.set_xlabel("simulated day")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "activity_over_time.png", dpi=90, metadata=meta)
    plt.close(fig)
    return list(PLOTS)
