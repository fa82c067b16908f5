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
           `python -c` importing pandas and doing the tasks' work, rounds interleaved: after
           `clean`, with no state folder, with `preload = false` (and with --before DIR, the
           same for the watchrun source in DIR); medians, min-max, the load average.
  devfirst the same 8 tasks' first build in `watchrun dev --no-tui --json -j2` after `clean`
           (to its build_finished), against the same peer (and --before DIR).
Also the peak RSS of the template and of the workers (VmHWM) at the end of the save part.

The libraries are not dependencies of watchrun: install them into the interpreter that runs
this script (`pip install pandas scikit-learn matplotlib`); a part whose imports are missing is
skipped with a message. Results: tests/bench/results/warm.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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

BUILD_TASK = '''# /// task
# ///
import pandas


def run():
    return int(pandas.Series(range({i} + 10)).sum())
'''
# the peer: one interpreter importing pandas once and doing the 8 tasks' work
IMPORT_AND_WORK = "import pandas; [int(pandas.Series(range(i + 10)).sum()) for i in range(8)]"


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr[-500:]}")
    return elapsed


def first_build(workdir: Path, rounds: int, before: Path | None) -> dict[str, Any]:
    """Rounds interleaved, so that every setting meets the same load: `watchrun build -j2` on
    8 tasks that import pandas, after `watchrun clean` (the template starts from the hint the
    last run left) and with no state folder at all (it guesses from the task files); with
    `preload = false`; `before`: the same with the watchrun source in that folder (a checkout
    of an earlier commit); and one interpreter importing pandas and doing the 8 tasks' work."""
    sources = {"": peers.REPO, **({"before ": before} if before is not None else {})}
    samples: dict[str, list[float]] = {}
    loads = [loadavg()]

    def build(label: str, repo: Path, preload: str, fresh: bool) -> None:
        root = workdir / f"build-{label.strip() or 'now'}-{preload.strip(chr(34))}"
        files = {f"tasks/t{i}.py": BUILD_TASK.format(i=i) for i in range(8)}
        files["watchrun.toml"] = f"preload = {preload}\n"
        write_files(root, files)
        env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get(
            "PYTHONPATH", ""))
        watchrun = [PYTHON, "-m", "watchrun", "-C", str(root)]
        if fresh:
            subprocess.run(["rm", "-rf", str(root / ".watchrun")], check=True)
        else:
            subprocess.run([*watchrun, "clean"], env=env, capture_output=True, check=True)
        key = f"{label}build preload={preload.strip(chr(34))}" + (
            ", no state folder" if fresh else ", after clean")
        samples.setdefault(key, []).append(timed([*watchrun, "build", "-j2"], env))

    settings = [(label, repo, preload, fresh) for label, repo in sources.items()
                for preload, fresh in (('"auto"', False), ('"auto"', True), ("false", False))]
    for n in range(rounds):
        # each round in another order: a measure does not always follow the same one
        shift = n % (len(settings) + 1)
        steps: list[tuple[str, Path, str, bool] | None] = [*settings, None]
        for step in steps[shift:] + steps[:shift]:
            if step is None:
                samples.setdefault("python: import pandas + the work", []).append(
                    timed([PYTHON, "-c", IMPORT_AND_WORK]))
            else:
                build(*step)
        loads.append(loadavg())
    return _table(rounds, loads, samples)


def timed_dev(argv: list[str], env: dict[str, str]) -> float:
    """`watchrun dev --json`: from its start to the end of its first build (`build_finished`),
    then stopped with Ctrl-C."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    elapsed = None
    try:
        for line in proc.stdout:
            if '"build_finished"' in line:
                elapsed = time.perf_counter() - started
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        proc.stdout.close()
    if elapsed is None:
        raise RuntimeError(f"{' '.join(argv)}: no build_finished ({proc.returncode})")
    return elapsed


def first_dev_build(workdir: Path, rounds: int, before: Path | None) -> dict[str, Any]:
    """The same 8 tasks, their first build in `watchrun dev --no-tui --json -j2` after
    `watchrun clean` (the template started from the hint, before the engine's import, or, in
    `before`, where dev did not start it early), rounds interleaved with the peer."""
    sources = {"": peers.REPO, **({"before ": before} if before is not None else {})}
    samples: dict[str, list[float]] = {}
    loads = [loadavg()]
    root = workdir / "devfirst"
    write_files(root, {f"tasks/t{i}.py": BUILD_TASK.format(i=i) for i in range(8)})
    for n in range(rounds):
        steps: list[tuple[str, Path] | None] = [*sources.items(), None]
        shift = n % len(steps)
        for step in steps[shift:] + steps[:shift]:
            if step is None:
                samples.setdefault("python: import pandas + the work", []).append(
                    timed([PYTHON, "-c", IMPORT_AND_WORK]))
                continue
            label, repo = step
            env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get(
                "PYTHONPATH", ""))
            watchrun = [PYTHON, "-m", "watchrun", "-C", str(root)]
            subprocess.run([*watchrun, "clean"], env=env, capture_output=True, check=True)
            samples.setdefault(f"{label}dev: first build, after clean", []).append(
                timed_dev([*watchrun, "dev", "--no-tui", "--json", "-j2"], env))
        loads.append(loadavg())
    return _table(rounds, loads, samples)


def _table(rounds: int, loads: list[float], samples: dict[str, list[float]]) -> dict[str, Any]:
    one = samples["python: import pandas + the work"]
    result: dict[str, Any] = {"rounds": rounds, "loadavg_1min": loads}
    for key, values in samples.items():
        result[key] = {
            "median_s": percentile(values, 50), "min_s": min(values), "max_s": max(values),
            "ratio_of_medians": percentile(values, 50) / percentile(one, 50),
            # rounds are paired: the ratio within a round is steadier under a drifting load
            "median_ratio_per_round": percentile(
                [v / o for v, o in zip(values, one, strict=True)], 50),
        }
    return result


def print_build_table(result: dict[str, Any]) -> None:
    loads = result["loadavg_1min"]
    print(f"| measure ({result['rounds']} rounds, load average {min(loads):.1f}-{max(loads):.1f})"
          " | median | min-max | / import (medians) | / import (median per round) |")
    print("| --- | --- | --- | --- | --- |")
    for key, row in result.items():
        if isinstance(row, dict):
            print(f"| {key} | {row['median_s']:.3f} s | {row['min_s']:.3f}-{row['max_s']:.3f} s"
                  f" | {row['ratio_of_medians']:.2f}x | {row['median_ratio_per_round']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7, help="first builds per setting")
    parser.add_argument("--before", type=Path, default=None,
                        help="build part: also measure the watchrun source in this folder")
    parser.add_argument("--parts", default="save,gather,build,devfirst")
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
        results["build"] = first_build(args.workdir, args.rounds, args.before)
        results["build"]["command"] = results["command"]
        print_build_table(results["build"])
    if "devfirst" in parts and has(IMPORTS["pandas"]):
        print("W9 first build in dev ...", flush=True)
        results["devfirst"] = first_dev_build(args.workdir, args.rounds, args.before)
        results["devfirst"]["command"] = results["command"]
        print_build_table(results["devfirst"])
    out = HERE / "results" / "warm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the parts not run this time keep their last results (the command says which ran)
    kept = json.loads(out.read_text()) if out.exists() else {}
    if kept.get("command") and set(parts) != {"save", "gather", "build", "devfirst"}:
        results["command"] = f"{kept['command']}; then {results['command']}"
    out.write_text(json.dumps({**kept, **results}, indent=1))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
