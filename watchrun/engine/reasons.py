"""Why a unit is dirty, as data. One function (`explain`) produces these; `status`,
`--dry-run`, the TUI and the scheduler all show the same reasons."""

from __future__ import annotations

import enum
from typing import NamedTuple


class ReasonKind(enum.Enum):
    NEVER_RUN = "never run"
    CODE_CHANGED = "code changed"
    CODE_ADDED = "code added"
    CODE_REMOVED = "code removed"
    PARAM_CHANGED = "param changed"
    KIND_CHANGED = "kind changed"
    ARGS_CHANGED = "arguments changed"
    INPUT_CHANGED = "input changed"
    INPUT_ADDED = "input added"
    INPUT_REMOVED = "input removed"
    UPSTREAM_CHANGED = "upstream output changed"
    UPSTREAM_DIRTY = "upstream dirty"
    OUTPUT_MISSING = "output missing"
    OUTPUT_MODIFIED = "output modified"
    OUTPUT_OF_LAST_RUN = "output written by its last run"  # under another signature
    STORED_MISSING = "stored output missing"  # its object was deleted or damaged
    FORCED = "forced"
    LAST_FAILED = "last run failed"
    LAST_CANCELLED = "last run cancelled"
    STALE = "input changed while it ran"
    EXTERNAL_CHANGED = "package version changed"
    IMPORT_ADDED = "import added"
    IMPORT_REMOVED = "import removed"
    NO_MATCH = "input matches no file"


class Reason(NamedTuple):
    """One reason, as data."""

    kind: ReasonKind
    subject: str = ""  # what changed: a definition, a param, a path, an upstream task
    detail: str = ""  # old -> new, or the ancestor it comes from
    location: str = ""  # file:line

    def format(self) -> str:
        """e.g. "param changed: size 64 -> 128 (tasks/base.py:7 (base))",
        "code changed: clean from base (tasks/base.py:12)"."""
        text = self.kind.value
        if self.subject:
            text += f": {self.subject}"
        if self.detail:
            text += f" {self.detail}"
        if self.location:
            text += f" ({self.location})"
        return text
