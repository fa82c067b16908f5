"""Small facts about where things are: a task's module name, its chain of files, its log."""

from __future__ import annotations

import os
from pathlib import Path

from watchrun.config import Config
from watchrun.project.loader import Project
from watchrun.project.model import Task


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts)


def package_of(module: str) -> str:
    return module.rpartition(".")[0]


def chain_files(project: Project, task: Task) -> list[tuple[Path, str]]:
    """(file, package) of every module in the task's chain, root ancestor first."""
    root = project.config.root
    files = []
    for name in reversed(task.chain):
        path = project.tasks[name].path
        files.append((path, package_of(module_name(root, path))))
    return files


def log_path(config: Config, task: str, iter: tuple[int, ...] = ()) -> Path:
    suffix = "".join(f".{i}" for i in iter)
    # one string join: this runs for every unit of a 100,000-iteration scope
    return Path(f"{config.state_dir}{os.sep}logs{os.sep}{task}{suffix}.log")
