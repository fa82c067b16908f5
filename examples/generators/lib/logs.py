"""Access-log parsing and small statistics (a project-local module: watchrun tracks its code).

Records are plain dicts so that `watchrun show` can print them without importing this module.
"""

from __future__ import annotations

import math


def parse_line(line: str, source: str) -> dict[str, object]:
    """`2024-05-06T08:03:17Z 198.51.100.7 GET /api/orders/1043 200 84ms` -> a record."""
    time, ip, method, url, status, duration = line.split()
    return {
        "source": source,  # file:line, to find the record again
        "time": time,
        "ip": ip,
        "method": method,
        "path": url.partition("?")[0],
        "status": int(status),
        "ms": int(duration.removesuffix("ms")),
    }


def route_for(path: str, routes: list[dict[str, str]]) -> dict[str, str] | None:
    """The route with the longest prefix of `path` (routes come sorted longest first)."""
    for route in routes:
        if path.startswith(route["prefix"]):
            return route
    return None


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile: small, exact for the few hundred values we have."""
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
