"""Draw the ratio chart of BENCHMARKS.md from the raw results.

    python chart.py RESULTS.json OUT.png

Run with the bench venv's Python (it has matplotlib); the harness calls it for you.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PEERS = ["make", "ninja", "doit", "pytask", "snakemake"]
COLORS = {"make": "#4c72b0", "ninja": "#55a868", "doit": "#c44e52", "pytask": "#8172b2",
          "snakemake": "#ccb974"}


def main(src: Path, dst: Path) -> None:
    data = json.loads(src.read_text())
    figures = [r for r in data["results"] if r.get("kind", "build") == "build"
               and "watchrun" in r["tools"] and any(
                   (r["tools"].get(p) or {}).get("ratio_to_watchrun") for p in PEERS)]
    fig, ax = plt.subplots(figsize=(12, 0.55 * max(4, len(figures)) + 1.5))
    height = 0.8 / len(PEERS)
    for row, result in enumerate(figures):
        for col, peer in enumerate(PEERS):
            entry = result["tools"].get(peer) or {}
            ratio = entry.get("ratio_to_watchrun")
            if not ratio or not entry.get("comparable", True) or "capped" in entry.get("note", ""):
                continue  # measured at another size than watchrun: no ratio
            y = row + (col - len(PEERS) / 2) * height
            ax.barh(y, ratio["median"], height=height, color=COLORS[peer],
                    label=peer if row == 0 or peer not in ax.get_legend_handles_labels()[1]
                    else None)
            ax.text(ratio["median"] * 1.05, y, f"{ratio['median']:.2g}", va="center", fontsize=7)
    ax.set_yticks(range(len(figures)))
    ax.set_yticklabels([f"{r['workload']} {r['name']}" for r in figures], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("peer time / watchrun time (median over rounds; > 1: watchrun faster)")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax.set_title("watchrun vs peers, same machine, same run")
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
