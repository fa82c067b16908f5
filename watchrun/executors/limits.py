"""What this machine has for the `resources` of units run locally: its visible GPUs and a
memory budget (`memory_budget` in watchrun.toml; default: its RAM).

The plan keeps the units that fit waiting (engine/plan.py: a unit starts once its GPUs and
memory are free, as its cpus count against `jobs`); the local executor refuses at once a unit
asking for more than exists at all (it would otherwise wait for ever), and lends each unit the
GPU indices it holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from watchrun.executors.base import Job

_NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU the NVIDIA driver sees


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs units may use: CUDA_VISIBLE_DEVICES when it is set (as CUDA reads it), else
    the ones the NVIDIA driver lists, else none."""
    said = environ.get("CUDA_VISIBLE_DEVICES")
    if said is not None:
        ids = [part.strip() for part in said.split(",") if part.strip()]
        # CUDA stops at the first invalid (negative) index
        for index, gpu in enumerate(ids):
            if gpu.startswith("-"):
                return ids[:index]
        return ids
    try:
        return [str(i) for i in range(len(os.listdir(_NVIDIA_GPUS)))]
    except OSError:
        return []


def machine_memory() -> int:
    """This machine's RAM in bytes (0: unknown, then memory is not limited)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def size_text(value: float) -> str:
    if value >= 2**30:
        return f"{value / 2**30:.4g} GiB"
    return f"{value / 2**20:.4g} MiB"


class LocalLimits:
    """The GPUs and memory units may take on this machine, and the GPUs each unit holds."""

    def __init__(self, gpus: list[str] | None = None, memory_budget: int | None = None,
                 budget_said: bool = False) -> None:
        self.gpus = visible_gpus() if gpus is None else gpus
        self.memory_budget = machine_memory() if memory_budget is None else memory_budget
        self._budget_said = budget_said or memory_budget is not None
        self._free_gpus = list(self.gpus)
        self._held: dict[object, list[str]] = {}

    def totals(self) -> tuple[int, int]:
        """(memory budget in bytes, GPUs) for the plan; a budget of 0 means no limit."""
        return self.memory_budget, len(self.gpus)

    def refusal(self, job: Job) -> str | None:
        """Why the job can never run here (it asks for more than exists), or None."""
        resources = job.resources
        if resources is None:
            return None
        task = job.key.task
        where = _resources_line(job)
        if resources.gpus > len(self.gpus):
            has = (f"{len(self.gpus)} ({', '.join(self.gpus)})" if self.gpus else
                   "none (CUDA_VISIBLE_DEVICES " + (
                       "is empty" if os.environ.get("CUDA_VISIBLE_DEVICES") is not None
                       else "is not set and the NVIDIA driver lists no GPU") + ")")
            plural = "s" if resources.gpus != 1 else ""
            return (f"{task} asks for {resources.gpus} GPU{plural} ({where}), and this machine "
                    f"has {has} visible to watchrun; lower the request, or run it where GPUs "
                    "are (the Ray executor on a cluster that has them)")
        memory = resources.memory
        if memory is not None and self.memory_budget and memory > self.memory_budget:
            budget = ("`memory_budget` in watchrun.toml" if self._budget_said
                      else "this machine's RAM; `memory_budget` in watchrun.toml sets another")
            return (f"{task} asks for {size_text(memory)} of memory ({where}), more than the "
                    f"memory budget of {size_text(self.memory_budget)} ({budget})")
        return None

    def take(self, key: object, gpus: int) -> list[str]:
        """The GPU indices lent to a unit until give_back (the plan started it only once
        they were free; if they are not, it gets the ones there are)."""
        if not gpus:
            return []
        held, self._free_gpus = self._free_gpus[:gpus], self._free_gpus[gpus:]
        self._held[key] = held
        return held

    def give_back(self, key: object) -> None:
        self._free_gpus.extend(self._held.pop(key, []))


_RESOURCES_LINE = re.compile(r"#\s*resources\s*=")


def _resources_line(job: Job) -> str:
    """Where the job's `resources` are set: `resources = {…}` at file:line (the nearest module
    of its chain that sets them, as the header's inheritance does)."""
    for file, _ in reversed(job.chain):
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(lines, start=1):
            if _RESOURCES_LINE.match(line.strip()):
                try:
                    shown = os.path.relpath(file, job.root)
                except ValueError:
                    shown = os.fspath(file)
                return f"`{line.strip().lstrip('#').strip()}` at {shown}:{number}"
    return "its `resources`"
