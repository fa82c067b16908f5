# /// task
# kind = "generator"
# after = ["services"]
# inputs = ["data/logs/*.log"]
# ///
"""One request per iteration, read from the day logs in order.

`start` is the index of the first request not yet complete for this exact code, table and
log content: after a crash or a Ctrl-C watchrun replays requests 0 .. start-1 from its store,
so the generator only has to skip them. A fresh build gets start = 0.
"""

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from lib.logs import parse_line, route_for


def read_requests(inputs: list[Path], services: dict) -> Iterator[dict]:
    for path in inputs:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip() or line.startswith("#"):
                    continue
                record = parse_line(line, source=f"{path.name}:{number}")
                route = route_for(record["path"], services["routes"])
                if route is not None and not route["service"]:
                    continue  # load-balancer health checks are not user traffic
                yield record


def run(inputs: list[Path], services: dict, start: int):
    yield from islice(read_requests(inputs, services), start, None)
