"""The tools under comparison: where they are installed, how to install them, how to call them.

Every Python tool gets its own virtualenv under the cache dir (default ~/.cache/watchrun-bench,
or $WATCHRUN_BENCH_CACHE), created with `python3 -m venv` and filled from PyPI with pip, so no
tool's dependencies leak into another's. make, ninja and entr come from Debian (apt-get), nodemon
from npm into the cache dir. watchrun itself is installed from this repository with
`pip install -e` into its own venv, like the peers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WATCHRUN_BENCH_CACHE", Path.home() / ".cache" / "watchrun-bench"))

# What each Python venv gets from PyPI.
PIP_PACKAGES: dict[str, list[str]] = {
    "doit": ["doit", "doit-auto1", "pyinotify"],  # doit 0.37 ships `auto` as a plugin
    "pytask": ["pytask", "pytask-parallel"],
    "snakemake": ["snakemake"],
    "watchfiles": ["watchfiles"],
    "bench": ["matplotlib"],  # draws the chart of BENCHMARKS.md
}
APT_PACKAGES = {"make": "make", "ninja": "ninja-build", "entr": "entr"}


def venv_bin(name: str, program: str) -> Path:
    return CACHE / f"venv-{name}" / "bin" / program


@dataclass
class Tool:
    """One tool: a builder (runs a DAG) or a watcher (restarts a command on save)."""

    name: str
    kind: str  # "builder" | "watcher"
    executable: Path
    state_paths: list[str] = field(default_factory=list)  # what "clean state" deletes
    env: dict[str, str] = field(default_factory=dict)

    def available(self) -> bool:
        return self.executable.exists()


def watchrun_python() -> tuple[Path, dict[str, str]]:
    """The interpreter that runs watchrun, and extra environment for it.

    Prefer the bench's own editable install; fall back to the interpreter running the harness
    with the repo on PYTHONPATH (what the developers use before `--setup` has run).
    """
    installed = venv_bin("watchrun", "python")
    if installed.exists():
        return installed, {}
    return Path(sys.executable), {"PYTHONPATH": str(REPO)}


def _which(program: str) -> Path:
    found = shutil.which(program)
    return Path(found) if found else Path("/nonexistent") / program


def all_tools() -> dict[str, Tool]:
    python, extra_env = watchrun_python()
    return {
        "watchrun": Tool("watchrun", "builder", python, [".watchrun"], extra_env),
        "make": Tool("make", "builder", _which("make")),
        "ninja": Tool("ninja", "builder", _which("ninja"), [".ninja_log", ".ninja_deps"]),
        "doit": Tool("doit", "builder", venv_bin("doit", "doit"),
                     [".doit.db", ".doit.db.db", ".doit.db.dat", ".doit.db.dir", ".doit.db.bak"]),
        "pytask": Tool("pytask", "builder", venv_bin("pytask", "pytask"),
                       [".pytask", "pytask.lock"]),
        "snakemake": Tool("snakemake", "builder", venv_bin("snakemake", "snakemake"),
                          [".snakemake"]),
        "entr": Tool("entr", "watcher", _which("entr")),
        "nodemon": Tool("nodemon", "watcher", CACHE / "node" / "node_modules" / ".bin" / "nodemon"),
        "watchfiles": Tool("watchfiles", "watcher", venv_bin("watchfiles", "watchfiles")),
        "doit-auto": Tool("doit-auto", "watcher", venv_bin("doit", "doit")),
    }


def builders() -> list[str]:
    return [name for name, tool in all_tools().items() if tool.kind == "builder"]


# -- setup ---------------------------------------------------------------------------------------

def _run(argv: list[str], log: list[str], cwd: Path | None = None) -> bool:
    print("  $", " ".join(argv), flush=True)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        log.append(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return proc.returncode == 0


def setup(wanted: set[str]) -> list[str]:
    """Install what the wanted tools need; return the problems (empty when all went fine)."""
    problems: list[str] = []
    CACHE.mkdir(parents=True, exist_ok=True)
    apt = sorted({APT_PACKAGES[t] for t in wanted if t in APT_PACKAGES
                  and not all_tools()[t].available()})
    if apt and _run(["apt-get", "update", "-q"], problems):
        _run(["apt-get", "install", "-y", "-q", *apt], problems)
    venvs = {"doit-auto": "doit"}
    for tool in sorted(wanted | {"bench"}):
        name = venvs.get(tool, tool)
        if name in PIP_PACKAGES:
            _setup_venv(name, PIP_PACKAGES[name], problems)
    if "watchrun" in wanted:
        # pytest: W7's bench_tui.py (another helper's) imports the TUI tests' fixtures
        _setup_venv("watchrun", ["-e", str(REPO), "pytest"], problems, check=False)
    if "nodemon" in wanted and not all_tools()["nodemon"].available():
        (CACHE / "node").mkdir(exist_ok=True)
        _run(["npm", "install", "--no-audit", "--no-fund", "nodemon"], problems, cwd=CACHE / "node")
    return problems


def _setup_venv(name: str, packages: list[str], problems: list[str], check: bool = True) -> None:
    venv = CACHE / f"venv-{name}"
    marker = venv / ".bench-installed"
    if check and marker.exists() and marker.read_text() == " ".join(packages):
        return
    if not (venv / "bin" / "python").exists() and not _run(
            ["python3", "-m", "venv", str(venv)], problems):
        return
    if _run([str(venv / "bin" / "pip"), "install", "-q", "--upgrade", *packages], problems):
        marker.write_text(" ".join(packages))


# -- versions ------------------------------------------------------------------------------------

VERSION_ARGS = {
    "make": ["--version"], "ninja": ["--version"], "doit": ["--version"],
    "pytask": ["--version"], "snakemake": ["--version"], "nodemon": ["--version"],
    "watchfiles": ["--version"],
}


def version(name: str) -> str:
    tool = all_tools()[name]
    if not tool.available():
        return "not installed"
    if name == "watchrun":
        argv = [str(tool.executable), "-c", "import watchrun; print(watchrun.__version__)"]
    elif name == "entr":
        return _dpkg_version("entr")
    elif name == "doit-auto":
        return version("doit")
    else:
        argv = [str(tool.executable), *VERSION_ARGS[name]]
    env = {**os.environ, **tool.env}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    first = text[0] if text else "unknown"
    if name == "pytask":
        return first + f", pytask-parallel {_pip_version('pytask', 'pytask-parallel')}"
    return first


def _dpkg_version(package: str) -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                          text=True)
    return proc.stdout.strip() or "unknown"


def _pip_version(venv: str, package: str) -> str:
    python = venv_bin(venv, "python")
    proc = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys; "
                           f"print(m.version('{package}'))"], capture_output=True, text=True)
    return proc.stdout.strip() or "not installed"


def python_version(executable: Path) -> str:
    proc = subprocess.run([str(executable), "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True)
    return proc.stdout.strip()
