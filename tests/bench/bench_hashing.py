"""Benchmark: hashing 200 files of 1 GB in total, behind the stat cache.

    python tests/bench/bench_hashing.py [--files 200] [--total-mb 1000] [--rounds 5]

Reports the median of each measurement, wall clock and CPU time of the process (all threads:
on a shared machine the CPU time is the steadier figure, and wall / CPU shows how well the
threads spread over the cores):
- first hash: no cache (the files are in the page cache, as right after they were written);
- no-op recheck: nothing changed, with a hasher loaded from the store (what a null build does),
  and again with the same hasher;
- recheck after touch: every file's mtime changed, content the same: all are read again.

and the floor under the recheck: the same files only read (into the same per-thread buffer,
in as many threads) and only hashed (the same number of bytes, from a buffer in the CPU's
cache). Reading plus hashing is what any content check has to pay.

Targets (2 cores): first hash <= 1.0 s, no-op recheck a few ms. The files live in a temporary
folder under /tmp and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from blake3 import blake3

from watchrun.state.hashing import CHUNK, FileHasher, _map_in_threads, _read_buffer
from watchrun.state.store import Store


def median_seconds(fn: Callable[[], object], rounds: int,
                   before: Callable[[], object] | None = None) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of `rounds` calls of fn."""
    walls, cpus = [], []
    for _ in range(rounds):
        if before is not None:
            before()
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def line(label: str, seconds: tuple[float, float], digits: int = 1) -> str:
    wall, cpu = seconds
    return f"  {label:35s}{wall * 1000:8.{digits}f} ms{cpu * 1000:8.{digits}f} ms CPU"


def make_files(folder: Path, count: int, total: int) -> list[Path]:
    size = total // count
    chunk = os.urandom(size)
    paths = []
    for i in range(count):
        path = folder / f"data{i:04d}.bin"
        # Different content per file: a prefix, so no two files hash alike.
        path.write_bytes(i.to_bytes(8, "little") + chunk[8:])
        paths.append(path)
    return paths


def touch_all(paths: list[Path]) -> None:
    for path in paths:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))


def read_only(path: Path) -> None:
    """What reading a file costs the hasher, without the hashing."""
    view = _read_buffer()
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.readv(fd, [view]):
            pass
    finally:
        os.close(fd)


def hash_only(size: int) -> None:
    """What hashing `size` bytes costs, without reading them: one CHUNK from the cache."""
    view = _read_buffer()
    hasher = blake3()
    for _ in range(size // CHUNK):
        hasher.update(view)
    hasher.update(view[:size % CHUNK])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--total-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="watchrun-bench-", dir="/tmp"))
    try:
        paths = make_files(folder, args.files, args.total_mb * 1_000_000)
        time.sleep(0.2)  # let the files settle (older than the racy window) so they are cached
        rounds = args.rounds

        first = median_seconds(lambda: FileHasher(None).hash_many(paths), rounds)

        store = Store(folder / ".watchrun")
        store.acquire_lock("bench")
        warm = FileHasher(store)
        warm.hash_many(paths)
        warm.flush()
        store.commit()
        null_build = median_seconds(lambda: FileHasher(store).hash_many(paths), rounds)
        same_hasher = median_seconds(lambda: warm.hash_many(paths), rounds)
        touched = median_seconds(lambda: warm.hash_many(paths), rounds,
                                 before=lambda: touch_all(paths))
        store.close()

        workers = min(len(paths), os.cpu_count() or 1)
        read = median_seconds(lambda: _map_in_threads(read_only, paths, workers), rounds)
        sizes = [path.stat().st_size for path in paths]
        hashed = median_seconds(lambda: _map_in_threads(hash_only, sizes, workers), rounds)

        print(f"{args.files} files, {args.total_mb} MB, {os.cpu_count()} CPUs, "
              f"median of {rounds}:")
        print(line("first hash (no cache)", first))
        print(line("no-op recheck, hasher from store", null_build, 2))
        print(line("no-op recheck, same hasher", same_hasher, 2))
        print(line("recheck after touching every file", touched))
        print(f"  floor, in {workers} threads:")
        print(line("  read only", read))
        print(line("  hash only", hashed))
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
