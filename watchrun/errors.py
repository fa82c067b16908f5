"""Project errors are values: a list of them is what a broken project *is*.

`build` prints them and exits 2; `dev` shows them and keeps watching. They never escape as
exceptions, so no traceback reaches the user for a mistake in their project.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple


class ProjectError(NamedTuple):
    """A problem in the project, where it is (a tuple: ordered by file, line, message)."""

    file: Path | None
    line: int | None
    message: str

    def location(self, root: Path | None = None) -> str:
        if self.file is None:
            return "watchrun"
        path = self.file
        if root is not None:
            with contextlib.suppress(ValueError):
                path = self.file.relative_to(root)
        return f"{path}:{self.line}" if self.line else str(path)

    def format(self, root: Path | None = None) -> str:
        return f"{self.location(root)}: error: {self.message}"


class ProjectErrors(Exception):
    """Raised only at the boundary (CLI) to carry the collected errors to an exit code 2."""

    def __init__(self, errors: list[ProjectError]) -> None:
        super().__init__("\n".join(e.format() for e in errors))
        self.errors = errors
