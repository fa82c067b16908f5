"""Stands, in the Ray tests, for a library that takes seconds to import (torch, say). A task that
imports it keeps its node's watchrun worker starting until the test lets the import finish: the
node template preloads what a task imports before it forks the unit's worker.

Importing it writes `importing.PID` in the gate folder (tests.ray_cluster.heavy_import_gate,
computed the same way here) and waits there for a file named `go`, 60 s at most. Imported only
by task code on the Ray nodes: the tests themselves never import it."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

_tag = re.sub(r"[^0-9A-Za-z.-]", "_", os.environ.get("WATCHRUN_TEST_SESSION", "none"))
_gate = Path("/tmp" if os.path.isdir("/tmp") else ".") / f"watchrun-heavy-import-{_tag}"
_gate.mkdir(exist_ok=True)
(_gate / f"importing.{os.getpid()}").write_text("")
_deadline = time.monotonic() + 60
while not (_gate / "go").exists() and time.monotonic() < _deadline:
    time.sleep(0.02)
