"""W4: one task over 200 input files of 1 GB in all (200 x 5,000,000 random bytes).

The task itself is cheap on purpose (it writes the number of files and their total size to
out/summary.txt, from stat alone), so the figures show what each tool spends deciding whether
to run it: hashing the inputs or reading their mtimes. Three figures per tool:

  first   never built (no outputs, no database): the tool reads what it needs and runs the task
  no-op   nothing changed: nothing may run
  touch   every input's mtime moved forward, content unchanged: we record whether the task
          reran (make and other mtime-based tools do; content-hashing tools should not)

The data lives once in the cache dir and is shared, so W4 runs tool after tool (not
interleaved): touching the inputs for one tool would otherwise dirty another's state. The page
cache is warm (the files were just written or read), as on a developer's machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from peers import CACHE, Tool
from workloads.common import Figure, Project, build_once, write_files

FILES = 200
FILE_SIZE = 5_000_000


def data_dir(files: int = FILES, size: int = FILE_SIZE) -> Path:
    """Create the input files once (reused across runs while their sizes match)."""
    folder = CACHE / "data" / f"w4-{files}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        path = folder / f"f{index:03d}.bin"
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
    return folder


def _inputs(folder: Path, files: int) -> list[str]:
    return [str(folder / f"f{i:03d}.bin") for i in range(files)]


PY_SUMMARY = "str(len(paths)) + ' ' + str(sum(os.stat(p).st_size for p in paths)) + '\\n'"


def project_files(tool: str, folder: Path, files: int) -> dict[str, str]:
    inputs = _inputs(folder, files)
    if tool == "make":
        return {"Makefile": "MAKEFLAGS += --no-builtin-rules\n.SUFFIXES:\n"
                f"out/summary.txt: {' '.join(inputs)}\n"
                "\tstat -c %s $^ | awk '{n++; s+=$$1} END {print n, s}' > $@\n"}
    if tool == "ninja":
        return {"build.ninja": "rule summary\n"
                "  command = stat -c %s $in | awk '{n++; s+=$$1} END {print n, s}' > $out\n"
                f"build out/summary.txt: summary {' '.join(inputs)}\n"}
    if tool == "snakemake":
        return {"Snakefile": f"INPUTS = {inputs!r}\n\n"
                "rule summary:\n    input: INPUTS\n    output: 'out/summary.txt'\n"
                "    shell: \"stat -c %s {input} | awk '{{n++; s+=$1}} END {{print n, s}}' "
                "> {output}\"\n"}
    if tool == "doit":
        return {"dodo.py": f"import os\nfrom pathlib import Path\n\nINPUTS = {inputs!r}\n\n\n"
                "def summary(paths, target):\n"
                f"    Path(target).write_text({PY_SUMMARY})\n\n\n"
                "def task_summary():\n"
                "    return {'actions': [(summary, [INPUTS, 'out/summary.txt'])],\n"
                "            'file_dep': INPUTS, 'targets': ['out/summary.txt']}\n"}
    if tool == "pytask":
        return {"task_summary.py": "import os\nfrom pathlib import Path\nfrom typing import "
                "Annotated\n\nfrom pytask import Product\n\n"
                f"INPUTS = [Path(p) for p in {inputs!r}]\n"
                "TARGET = Path(__file__).parent / 'out' / 'summary.txt'\n\n\n"
                "def task_summary(paths: list[Path] = INPUTS,\n"
                "                 target: Annotated[Path, Product] = TARGET) -> None:\n"
                f"    target.write_text({PY_SUMMARY})\n"}
    if tool == "watchrun":
        return {"tasks/summary.py": "# /// task\n"
                f"# inputs = [{str(folder / '*.bin')!r}]\n"
                "# outputs = [\"out/summary.txt\"]\n# ///\nimport os\nfrom pathlib import Path\n"
                "\n\ndef run(inputs):\n    paths = inputs\n"
                f"    Path('out/summary.txt').write_text({PY_SUMMARY})\n"}
    raise ValueError(tool)


def make_project(tool: Tool, root: Path, folder: Path, files: int, size: int) -> Project:
    write_files(root, project_files(tool.name, folder, files))
    (root / "out").mkdir(exist_ok=True)
    summary = root / "out" / "summary.txt"
    return Project(tool, root, [summary], {summary: f"{files} {files * size}\n"})


def touch_all(folder: Path) -> None:
    stamp = time.time_ns()
    for path in folder.iterdir():
        os.utime(path, ns=(stamp, stamp))


def w4_big_inputs(tools: dict[str, Tool], workdir: Path, rounds: int, timeout: float,
                  files: int = FILES, size: int = FILE_SIZE) -> list[Figure]:
    folder = data_dir(files, size)
    params = {"files": files, "bytes": files * size}
    gb = f"{files * size / 1e9:g} GB"
    first = Figure("W4", f"first run over {files} inputs, {gb}", params, key="W4-first")
    noop = Figure("W4", f"no-op over {files} inputs, {gb}", params, key="W4-noop")
    touch = Figure("W4", "after touching every input's mtime", params, key="W4-touch")
    touch.unit = "s (reran?)"
    for name, tool in tools.items():
        project = make_project(tool, workdir / "bigfiles" / name, folder, files, size)
        for rnd in range(rounds + 1):  # round 0 is the warm-up
            project.clean_state()
            steps = [(first, 1, False), (noop, 0, True), (touch, None, True)]
            for figure, expected, _ in steps:
                if figure is touch:
                    touch_all(folder)
                run = build_once(project, 1, expected, timeout)
                print(f"    {'warm-up ' if rnd == 0 else ''}W4 {figure.name} {name}: "
                      f"{run.sample.seconds:.3f} s, {run.executed} executed {run.problem}",
                      flush=True)
                if rnd > 0:
                    figure.runs.setdefault(name, []).append(run)
                elif run.problem:
                    figure.failed.setdefault(name, f"warm-up: {run.problem}")
                if run.problem:
                    break
        for figure in (first, noop, touch):
            if not figure.valid(name):
                runs = figure.runs.get(name, [])
                figure.failed.setdefault(
                    name, runs[-1].problem if runs else "an earlier step failed")
        reran = [r.executed for r in touch.valid(name)]
        if reran:
            touch.notes[name] = "reran the task" if all(reran) else (
                "reran nothing" if not any(reran) else f"reran {sum(reran)}/{len(reran)} times")
    return [first, noop, touch]
