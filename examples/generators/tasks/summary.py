# /// task
# kind = "collector"
# after = ["window_stats"]
# [params]
# worst = 5
# ///
"""Fold the windows into one summary.

run() is called once per window, in window order, in one process that lives until the last
window (PUSH); gather() is called at the end (PULL) and returns the collector's single output.
"""

from lib.logs import percentile

windows: list[dict] = []
latencies: dict[str, list[int]] = {}
totals: dict[str, dict[str, int]] = {}


def run(window_stats: dict) -> None:
    windows.append({k: window_stats[k] for k in ("start", "requests", "errors", "slow", "p95_ms")})
    for name, s in window_stats["services"].items():
        latencies.setdefault(name, []).extend(s["latencies"])
        t = totals.setdefault(name, {"requests": 0, "errors": 0, "slow": 0})
        t["requests"] += len(s["latencies"])
        t["errors"] += s["errors"]
        t["slow"] += s["slow"]


def error_rate(row: dict) -> float:
    return row["errors"] / row["requests"] if row["requests"] else 0.0


def gather(worst: int) -> dict:
    services = {
        name: {**t, "p50_ms": percentile(latencies[name], 50),
               "p95_ms": percentile(latencies[name], 95)}
        for name, t in sorted(totals.items())
    }
    ranked = sorted(windows, key=lambda w: (error_rate(w), w["p95_ms"]), reverse=True)
    return {
        "requests": sum(w["requests"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "slow": sum(w["slow"] for w in windows),
        "windows": len(windows),
        "first": windows[0]["start"] if windows else None,
        "last": windows[-1]["start"] if windows else None,
        "services": services,
        "worst_windows": ranked[:worst],
    }
