"""W9: dev with heavy imports (issue 15): watchrun's warm template against peers that restart a
whole Python process per save.

    python tests/bench/bench_warm.py                 # everything, 30 saves per tool
    python tests/bench/bench_warm.py --saves 10 --parts save

Parts:
  save     save -> the new code running (its first statement after its imports), p50/p90 over
           --saves saves, for a unit importing pandas, and one importing scikit-learn + pandas +
           matplotlib.pyplot; watchrun (`dev --no-tui --json`; the unit loops until cancelled,
           as in W5) against `entr -n -r`, nodemon, the watchfiles CLI and `doit auto`
           (whichever are installed: `python tests/bench/run.py --setup` installs them).
  gather   a collector in a project importing the three libraries: its gather() is edited;
           save -> gather running (the collector replays its pushes from stored values).
  build    first build of 8 tasks that each import pandas, -j 2: wall time against one
           `python -c "import pandas"`, with the template and with `preload = false`.
Also the peak RSS of the template and of the workers (VmHWM) at the end of the save part.

The libraries are not dependencies of watchrun: install them into the interpreter that runs
this script (`pip install pandas scikit-learn matplotlib`); a part whose imports are missing is
skipped with a message. Results: tests/bench/results/warm.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
from measure import percentile  # noqa: E402
from workloads.common import write_files  # noqa: E402
from workloads.devloop import SETTLE, Inbox, running  # noqa: E402

PYTHON = sys.executable  # has the libraries; runs every tool's unit (a venv: not resolved)
IMPORTS = {
    "pandas": "import pandas\n",
    "sklearn+pandas+matplotlib": "import pandas\nimport sklearn.ensemble\n"
                                 "import matplotlib\nmatplotlib.use('Agg')\n"
                                 "import matplotlib.pyplot\n",
}
# what the unit does with them (a task uses what it imports)
USES = {
    "pandas": "pandas.Series",
    "sklearn+pandas+matplotlib": "pandas.Series, sklearn.ensemble, matplotlib.pyplot",
}

PEER_UNIT = '''{imports}import os, signal, socket, sys, time

VERSION = {version}
SOCK = {sock!r}
_out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def report(kind):
    try:
        _out.sendto(f"{{kind}} {{VERSION}} {{time.time()!r}} {{os.getpid()}}".encode(), SOCK)
    except OSError:
        pass


def stop(signum, frame):
    sys.exit(0)


if __name__ == "__main__":
    report("started")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, stop)
    if "--once" not in sys.argv:
        while True:
            time.sleep(3600)
'''

WATCHRUN_UNIT = '''# /// task
# ///
{imports}import os, socket, time

VERSION = {version}
SOCK = {sock!r}


def run():
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    out.sendto(f"started {{VERSION}} {{time.time()!r}} {{os.getpid()}}".encode(), SOCK)
    libraries = ({uses})
    while libraries:
        time.sleep(3600)
'''


def watchrun_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(peers.REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def has(imports: str) -> bool:
    return subprocess.run([PYTHON, "-c", imports], capture_output=True).returncode == 0


def argv_of(tool: str, root: Path) -> tuple[list[str], str | None] | None:
    tools = peers.all_tools()
    if tool == "watchrun":
        return [PYTHON, "-m", "watchrun", "-C", ".", "dev", "--no-tui", "--json"], None
    exe = tools[tool].executable
    if not exe.exists():
        return None
    if tool == "entr":
        return [str(exe), "-n", "-r", PYTHON, "app.py"], "app.py\n"
    if tool == "nodemon":
        return [str(exe), "--watch", "app.py", "--ext", "py", "--exec", f"{PYTHON} app.py"], None
    if tool == "watchfiles":
        return [str(exe), "--target-type", "command", f"{PYTHON} app.py", "app.py"], None
    if tool == "doit-auto":
        write_files(root, {"dodo.py": "def task_app():\n"
                           f"    return {{'actions': [{PYTHON + ' app.py --once'!r}],\n"
                           "            'file_dep': ['app.py']}\n"})
        return [str(exe), "auto"], None
    return None


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "n": len(values)}


def peak_rss(root_pid: int) -> dict[str, float]:
    """VmHWM (MB) of the template and the largest worker below a watchrun process."""
    import psutil

    found = {"template_mb": 0.0, "worker_max_mb": 0.0, "workers": 0.0}
    try:
        below = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for proc in below:
        try:
            cmd = " ".join(proc.cmdline())
            with open(f"/proc/{proc.pid}/status") as f:
                hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
        except (OSError, StopIteration, psutil.Error):
            continue
        if "executors.template" in cmd:
            found["template_mb"] = max(found["template_mb"], hwm)
        elif "executors.worker" in cmd:
            found["workers"] += 1
            found["worker_max_mb"] = max(found["worker_max_mb"], hwm)
    return found


def save_latency(tool: str, variant: str, workdir: Path, saves: int) -> dict[str, Any]:
    root = workdir / "save" / variant.replace("+", "_") / tool
    root.mkdir(parents=True, exist_ok=True)
    sock = tempfile.mktemp(prefix="wrb9-", suffix=".sock", dir="/tmp")
    rel = "tasks/app.py" if tool == "watchrun" else "app.py"
    template = WATCHRUN_UNIT if tool == "watchrun" else PEER_UNIT

    def source(version: int) -> str:
        return template.format(imports=IMPORTS[variant], version=version, sock=sock,
                               uses=USES[variant])

    write_files(root, {rel: source(0)})
    found = argv_of(tool, root)
    if found is None:
        return {"failed": "not installed"}
    argv, stdin_text = found
    inbox = Inbox(sock)
    seen: list[tuple[str, int, float]] = []
    starts: list[float] = []
    rss: dict[str, float] = {}
    env = watchrun_env() if tool == "watchrun" else dict(os.environ)
    try:
        with running(argv, root, env, stdin_text, root / "logs") as proc:
            if inbox.wait("started", 0, 120, seen) is None:
                return {"failed": f"the first start never came (see {root / 'logs'})"}
            missed = 0
            for version in range(1, saves + 1):
                time.sleep(SETTLE)
                path = root / rel
                saved = time.time()
                path.write_text(source(version))  # in place, as in W5: some peers watch the
                # file itself, and lose it when an editor replaces it by rename
                started = inbox.wait("started", version, 30, seen)
                if started is None:
                    missed += 1
                    if missed >= 3:
                        break
                    continue
                starts.append(started - saved)
            if tool == "watchrun":
                rss = peak_rss(proc.pid)
    finally:
        inbox.close()
        os.unlink(sock)
    return {"start": stats(starts), "samples": starts, **({"rss": rss} if rss else {}),
            "failed": "" if starts else "no restart observed"}


# -- gather ---------------------------------------------------------------------------------

GATHER_PROJECT = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/source.py": '''# /// task
# kind = "generator"
# ///
{imports}
def run():
    for i in range(4):
        yield i
''',
    "tasks/summary.py": '''# /// task
# kind = "collector"
# after = ["source"]
# ///
{imports}import os, socket, time

SEEN = []


def run(source):
    SEEN.append(source)


def gather():
    libraries = (pandas.Series, sklearn.ensemble, matplotlib.pyplot)
    version = {version} + 0 * len(libraries)
    out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    out.sendto(f"started {{version}} {{time.time()!r}} {{os.getpid()}}".encode(), {sock!r})
    return sum(SEEN) + version
''',
}


def gather_latency(workdir: Path, saves: int) -> dict[str, Any]:
    imports = IMPORTS["sklearn+pandas+matplotlib"]
    root = workdir / "gather"
    root.mkdir(parents=True, exist_ok=True)
    sock = tempfile.mktemp(prefix="wrb9g-", suffix=".sock", dir="/tmp")

    def files(version: int) -> dict[str, str]:
        return {rel: text.format(imports=imports, version=version, sock=sock)
                for rel, text in GATHER_PROJECT.items()}

    write_files(root, files(0))
    inbox = Inbox(sock)
    seen: list[tuple[str, int, float]] = []
    starts: list[float] = []
    argv = [PYTHON, "-m", "watchrun", "-C", ".", "dev", "--no-tui", "--json"]
    try:
        with running(argv, root, watchrun_env(), None, root / "logs"):
            if inbox.wait("started", 0, 120, seen) is None:
                return {"failed": f"the first gather never came (see {root / 'logs'})"}
            for version in range(1, saves + 1):
                time.sleep(SETTLE)
                path = root / "tasks/summary.py"
                saved = time.time()
                path.write_text(files(version)["tasks/summary.py"])
                started = inbox.wait("started", version, 30, seen)
                if started is not None:
                    starts.append(started - saved)
    finally:
        inbox.close()
        os.unlink(sock)
    return {"start": stats(starts), "samples": starts,
            "failed": "" if starts else "no gather observed"}


# -- first build ----------------------------------------------------------------------------

def first_build(workdir: Path, rounds: int) -> dict[str, Any]:
    task = '''# /// task
# ///
import pandas


def run():
    return int(pandas.Series(range({i} + 10)).sum())
'''
    result: dict[str, Any] = {}
    for preload in ('"auto"', "false"):
        root = workdir / f"build-{preload.strip(chr(34))}"
        files = {f"tasks/t{i}.py": task.format(i=i) for i in range(8)}
        files["watchrun.toml"] = f"preload = {preload}\n"
        write_files(root, files)
        times = []
        for _ in range(rounds):
            subprocess.run([PYTHON, "-m", "watchrun", "-C", str(root), "clean"],
                           env=watchrun_env(), capture_output=True, check=True)
            started = time.perf_counter()
            proc = subprocess.run([PYTHON, "-m", "watchrun", "-C", str(root), "build", "-j2"],
                                  env=watchrun_env(), capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                return {"failed": proc.stderr[-500:]}
        result[f"build_preload_{preload.strip(chr(34))}_s"] = percentile(times, 50)
    imports = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", "import pandas"], check=True)
        imports.append(time.perf_counter() - started)
    result["python_import_pandas_s"] = percentile(imports, 50)
    one_import = result["python_import_pandas_s"]
    result["ratio_to_one_import"] = result["build_preload_auto_s"] / one_import
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="first builds per setting")
    parser.add_argument("--parts", default="save,gather,build")
    parser.add_argument("--tools", default="watchrun,entr,nodemon,watchfiles,doit-auto")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "watchrun-bench-w9")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, Any] = {"command": "python tests/bench/bench_warm.py " +
                               " ".join(sys.argv[1:]),
                               "python": "python{}.{}.{}".format(*sys.version_info[:3])}
    if "save" in parts:
        for variant, imports in IMPORTS.items():
            if not has(imports):
                results[f"save {variant}"] = {"failed": f"not installed in {PYTHON}"}
                continue
            for tool in args.tools.split(","):
                print(f"W9 save {variant} {tool} ...", flush=True)
                entry = save_latency(tool, variant, args.workdir, args.saves)
                results.setdefault(f"save {variant}", {})[tool] = entry
                print(f"    {json.dumps({k: v for k, v in entry.items() if k != 'samples'})}",
                      flush=True)
    if "gather" in parts and has(IMPORTS["sklearn+pandas+matplotlib"]):
        print("W9 gather ...", flush=True)
        results["gather"] = gather_latency(args.workdir, args.saves)
        print(f"    {results['gather'].get('start')}", flush=True)
    if "build" in parts and has(IMPORTS["pandas"]):
        print("W9 first build ...", flush=True)
        results["build"] = first_build(args.workdir, args.rounds)
        print(f"    {results['build']}", flush=True)
    out = HERE / "results" / "warm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
