# /// task
# abstract = true
# after = {request = "requests", services = "services"}
# [params]
# slow_ms = 1000
# ///
"""Template for the per-request step: tag a request with its service, team and outcome.

It runs once per iteration of `requests`: `request` is that iteration's record, `services`
(outside the generator's scope) is passed whole. A concrete task extends this one and sets
its own thresholds; it may also override a helper, e.g. `outcome`.
"""

from lib.logs import route_for


def outcome(status: int) -> str:
    if status >= 500:
        return "error"
    if status >= 400:
        return "client_error"
    return "ok"


def run(request: dict, services: dict, slow_ms: int) -> dict:
    route = route_for(request["path"], services["routes"])
    service = route["service"] if route else "unknown"
    return {
        **request,
        "service": service,
        "team": services["teams"].get(service, "unknown"),
        "outcome": outcome(request["status"]),
        "slow": request["ms"] >= slow_ms,
    }
