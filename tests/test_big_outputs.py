"""Big outputs and yields travel as files (issue 17 point 15): a worker pickles a value of
INLINE_LIMIT bytes or more straight into a temporary file in the store's object folder and
sends only its path and digest; watchrun adopts the file. Through the real CLI: what is stored
so is read back by `show` and by downstream units, the early cutoff still sees an unchanged
value, and no temporary file is left behind, whether the unit succeeds or fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import watchrun, write_project
from watchrun.executors import bigpickle
from watchrun.state import objects
from watchrun.state.store import INLINE_LIMIT

pytestmark = pytest.mark.usefixtures("no_leaks")

BIG = 3 * INLINE_LIMIT  # a file in the store, and more than one write of the pickle


def temporaries(root: Path) -> list[str]:
    folder = root / ".watchrun" / "objects"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(objects.TEMP_PREFIX))


def object_files(root: Path) -> list[Path]:
    folder = root / ".watchrun" / "objects"
    return [p for p in folder.glob("??/*") if p.is_file()]


def test_the_worker_and_the_store_agree_on_what_is_big_and_how_temporaries_are_named() -> None:
    assert bigpickle.BIG_PICKLE == INLINE_LIMIT
    assert bigpickle.TEMP_PREFIX == objects.TEMP_PREFIX


PROJECT = {
    "watchrun.toml": "jobs = 2\n",
    "tasks/big.py": f"""
        # /// task
        # ///
        def run():
            return {{"blob": bytes(range(256)) * ({BIG} // 256), "tag": "v1"}}
    """,
    "tasks/size.py": """
        # /// task
        # after = ["big"]
        # ///
        def run(big):
            return (len(big["blob"]), big["blob"][:3], big["tag"])
    """,
    "tasks/parts.py": f"""
        # /// task
        # kind = "generator"
        # ///
        def run():
            for i in range(3):
                yield bytes([i]) * {BIG}
    """,
    "tasks/weigh.py": """
        # /// task
        # after = ["parts"]
        # ///
        def run(parts):
            return (parts[0], len(parts))
    """,
    "tasks/pile.py": f"""
        # /// task
        # kind = "collector"
        # after = ["parts"]
        # ///
        seen = []

        def run(parts):
            seen.append(parts[0])

        def gather():
            return b"".join(bytes([i]) for i in sorted(seen)) * {BIG}
    """,
}


def test_big_values_are_stored_as_files_and_read_back_by_show_and_downstream_units(
        tmp_path: Path) -> None:
    root = write_project(tmp_path, PROJECT)
    first = watchrun(root, "build", "--json")
    assert first.code == 0, first.stderr
    assert temporaries(root) == []
    # big's output, three yields and pile's gather: five files, whole under their names
    assert len(object_files(root)) == 5
    assert watchrun(root, "show", "size").stdout.strip() == f"({BIG}, b'\\x00\\x01\\x02', 'v1')"
    shown = watchrun(root, "show", "big")
    assert shown.code == 0 and "'tag': 'v1'" in shown.stdout, shown.stderr
    assert watchrun(root, "show", "weigh", "--iter", "2").stdout.strip() == f"(2, {BIG})"
    assert watchrun(root, "show", "pile").stdout.rstrip("\n") == "\x00\x01\x02" * BIG
    # the bytes under each name are the pickle the name says (the worker's digest is right)
    store_check = watchrun(root, "build", "--json")
    assert store_check.code == 0 and store_check.ran() == []

    # an edit that gives the same value: the early cutoff spares the downstream unit
    big = root / "tasks/big.py"
    big.write_text(big.read_text().replace('"tag": "v1"', '"tag": "v" + "1"'))
    again = watchrun(root, "build", "--json")
    assert again.code == 0 and again.ran() == ["big"]
    assert temporaries(root) == []


def test_no_temporary_file_is_left_when_a_unit_with_a_big_value_fails(tmp_path: Path) -> None:
    root = write_project(tmp_path, {
        # pickled (a file is written) before the missing output is noticed
        "tasks/missing.py": f"""
            # /// task
            # outputs = ["never.txt"]
            # ///
            def run():
                return b"m" * {BIG}
        """,
        # the file is begun with the big bytes, then the lambda cannot be pickled
        "tasks/halfway.py": f"""
            # /// task
            # ///
            def run():
                return [b"h" * {BIG}, lambda: 1]
        """,
        # a generator whose second big value cannot be pickled
        "tasks/gen.py": f"""
            # /// task
            # kind = "generator"
            # ///
            def run():
                yield b"g" * {BIG}
                yield [b"g" * {BIG}, lambda: 2]
        """,
        "tasks/fine.py": f"""
            # /// task
            # ///
            def run():
                return b"f" * {BIG}
        """,
    })
    run = watchrun(root, "build", "--json")
    assert run.code == 1
    failed = {e["task"]: e.get("error", "") for e in run.events if e["event"] == "unit_failed"}
    assert set(failed) == {"missing", "halfway", "gen"}, run.stdout
    assert "never.txt" in failed["missing"]
    assert "not picklable" in failed["halfway"]
    assert "not picklable" in failed["gen"]
    assert temporaries(root) == []
    assert watchrun(root, "show", "fine").stdout.rstrip("\n") == "f" * BIG
    # the generator's first value was stored (a generator keeps what it yielded)
    assert watchrun(root, "show", "gen", "--iter", "0").stdout.rstrip("\n") == "g" * BIG
