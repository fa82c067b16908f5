# /// task
# inputs = ["data/services.csv"]
# ///
"""The lookup table: which service and team own a URL prefix (task1 of the diagram)."""

import csv
from pathlib import Path


def run(inputs: list[Path]) -> dict:
    with open(inputs[0], newline="") as f:
        routes = list(csv.DictReader(f))
    # longest prefix first, so the most specific route wins a lookup
    routes.sort(key=lambda r: len(r["prefix"]), reverse=True)
    teams = {r["service"]: r["team"] for r in routes if r["service"]}
    return {"routes": routes, "teams": teams}
