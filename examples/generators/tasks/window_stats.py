# /// task
# after = {window = "windows"}
# ///
"""Statistics of one time window (runs once per window, in the scope of `windows`)."""

from collections import defaultdict

from lib.logs import percentile


def run(window: dict) -> dict:
    requests = window["requests"]
    latencies: dict[str, list[int]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    slow: dict[str, int] = defaultdict(int)
    for r in requests:
        latencies[r["service"]].append(r["ms"])
        errors[r["service"]] += r["outcome"] == "error"
        slow[r["service"]] += r["slow"]
    return {
        "start": window["start"],
        "requests": len(requests),
        "errors": sum(errors.values()),
        "slow": sum(slow.values()),
        "p95_ms": percentile([r["ms"] for r in requests], 95),
        "services": {
            name: {"latencies": sorted(ms), "errors": errors[name], "slow": slow[name]}
            for name, ms in sorted(latencies.items())
        },
    }
