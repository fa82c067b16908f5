"""Small facts about where things are: a task's module name, its chain of files, its log."""

from __future__ import annotations

from pathlib import Path

from watchrun.config import Config
from watchrun.paths import log_file
from watchrun.project.loader import Project
from watchrun.project.model import Task


def package_of(module: str) -> str:
    return module.rpartition(".")[0]


def chain_files(project: Project, task: Task) -> list[tuple[Path, str]]:
    """(file, package) of every module in the task's chain, root ancestor first."""
    modules = project.task_modules
    return [(project.tasks[name].path, package_of(modules[name]))
            for name in reversed(task.chain)]


def log_path(config: Config, task: str, iter: tuple[int, ...] = ()) -> str:
    return log_file(config.state_dir, task, iter)
