"""What a UI may ask of a running `dev` engine, and the read-only view it draws from.

The TUI depends only on this module and on `engine.events`; the dev engine implements
`EngineControl`. Kept free of engine internals so the UI can be tested against a real engine and
its layout against a fixed `ProjectView`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class UnitState(enum.Enum):
    """The state of a task as the UI shows it."""

    CLEAN = "clean"
    DIRTY = "dirty"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BROKEN = "broken"


@dataclass(frozen=True)
class ParamView:
    name: str
    value: str  # repr of the value
    origin: str  # "tasks/base.py:7 (base)"


@dataclass(frozen=True)
class TaskView:
    name: str
    kind: str  # "task" | "generator" | "collector"
    chain: tuple[str, ...]  # the task, its parent, …
    upstreams: tuple[str, ...]  # explicit and implicit, sorted
    downstreams: tuple[str, ...]
    params: tuple[ParamView, ...]
    scope: tuple[str, ...]  # generator scope path, outermost first
    file: str  # relative path of the module
    abstract: bool = False
    priority: int = 0  # among ready units, a higher priority runs first


@dataclass(frozen=True)
class ErrorView:
    file: str | None
    line: int | None
    message: str


@dataclass
class ProjectView:
    """A snapshot of the project for drawing: tasks in topological order."""

    tasks: list[TaskView]
    errors: list[ErrorView] = field(default_factory=list)
    watched_files: int = 0


class EngineControl(Protocol):
    def view(self) -> ProjectView:
        """The current project (changes after a reload: the UI asks again on `change`)."""
        ...

    def reasons(self, task: str) -> list[str]:
        """Why the task is dirty now (formatted reasons), [] when clean."""
        ...

    def log_path(self, task: str) -> str | None:
        """The log file of the task's latest unit (the UI tails it), or None."""
        ...

    def pause(self, task: str) -> str | None:
        """SIGSTOP the task's running units. None on success, else why not (e.g. remote)."""
        ...

    def resume(self, task: str) -> str | None: ...

    def interrupt(self, task: str) -> None:
        """Cancel the task's running units; they stay cancelled until a change or rerun."""
        ...

    def rerun(self, task: str) -> None:
        """Continue the task's interrupted units (not forced); a task with none is run again
        (forced), and what depends on it."""
        ...

    def continue_task(self, task: str) -> None:
        """Run the task's units that are not done (interrupted, failed, dirty); never forced."""
        ...

    def force(self, task: str) -> None:
        """Run the task again (forced), and what depends on it."""
        ...

    def paused_tasks(self) -> set[str]:
        """The tasks with a running unit paused by the user, as the plan knows them (a paused
        unit replaced by a rerun is not paused any more)."""
        ...

    def pause_all(self) -> None:
        """Stop scheduling and SIGSTOP every running unit."""
        ...

    def resume_all(self) -> None: ...

    def quit(self) -> None:
        """Cancel what runs, end every process; the engine's run() returns."""
        ...
