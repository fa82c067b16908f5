"""File and folder hashes behind the stat cache, on real files."""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from watchrun.state.hashing import (
    BIG_FILE,
    CHUNK,
    FileHasher,
    _map_in_threads,
    _read_buffer,
    hash_bytes,
    hash_file_content,
)
from watchrun.state.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / ".watchrun")
    s.acquire_lock("test")
    yield s
    s.close()


def settled(store: Store | None) -> FileHasher:
    """A hasher that caches files changed just now too (see `racy_ns`), so tests need not wait
    for files to age; the racy case has its own test."""
    return FileHasher(store, racy_ns=0)


def touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_hash_bytes_is_blake3_hex() -> None:
    assert hash_bytes(b"abc") == blake3(b"abc").hexdigest()
    big = os.urandom(BIG_FILE + 1)  # hashed with threads: the same digest
    assert hash_bytes(big) == blake3(big).hexdigest()


def test_a_file_hash_is_its_content_hash(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"hello")
    big_data = os.urandom(BIG_FILE + 12345)
    big.write_bytes(big_data)
    hasher = FileHasher(None)
    assert hasher.hash_path(small) == blake3(b"hello").hexdigest()
    assert hasher.hash_path(big) == blake3(big_data).hexdigest()
    assert hasher.hash_path(tmp_path / "nothing") is None
    assert hasher.hash_path(small / "below a file") is None


SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, BIG_FILE + 5]


@pytest.mark.parametrize("threads", [1, blake3.AUTO])
def test_reading_in_pieces_or_by_a_map_gives_the_content_hash(tmp_path: Path, threads: int
                                                             ) -> None:
    # sizes around the read buffer's: pieces that end exactly at the end of the file, or one
    # byte after it; threads=1 reads even a big file, AUTO maps it
    for size in SIZES:
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        assert hash_file_content(str(path), size, threads=threads) == blake3(data).hexdigest()


def test_threads_hashing_at_once_each_read_into_their_own_buffer(tmp_path: Path) -> None:
    contents = [os.urandom(2 * CHUNK + i) for i in range(8)]
    paths = []
    for i, data in enumerate(contents):
        paths.append(tmp_path / f"f{i}")
        paths[-1].write_bytes(data)
    digests: dict[int, str] = {}

    def hash_all(offset: int) -> None:
        for _ in range(3):
            for i in range(len(paths)):
                j = (i + offset) % len(paths)
                digests[j] = hash_file_content(str(paths[j]), 0, threads=1)

    threads = [threading.Thread(target=hash_all, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert digests == {i: blake3(data).hexdigest() for i, data in enumerate(contents)}


def test_the_read_buffer_starts_on_a_page_boundary() -> None:
    # the kernel's copy into a buffer 16 bytes past a cache line takes twice as long
    view = _read_buffer()
    assert len(view) == CHUNK and not view.readonly
    assert ctypes.addressof(ctypes.c_char.from_buffer(view)) % mmap.PAGESIZE == 0


def finishes(fn: Callable[[], object], seconds: float = 10.0) -> object:
    """fn's result, failing the test instead of hanging if it blocks."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, "blocked"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no fifos here")
def test_a_fifo_is_not_read_even_where_a_file_was(tmp_path: Path) -> None:
    # A fifo without a writer would block a reader forever. Its kind stands for its content,
    # also when it takes a file's place between the stat and the read.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    digest = finishes(lambda: FileHasher(None).hash_path(fifo))
    assert digest == hash_bytes(b"special file, mode 10000")
    assert finishes(lambda: hash_file_content(str(fifo), 0, threads=1)) == digest
    assert finishes(lambda: hash_file_content(str(fifo), BIG_FILE, threads=1)) == digest


def test_a_folder_where_a_file_was_is_an_error_as_before(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        hash_file_content(str(tmp_path), 10)


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    first = settled(store)
    digest = first.hash_path(path)
    first.flush()
    store.commit()
    again = settled(store)  # a new build: the cache comes from the store
    assert again.hash_path(path) == digest
    assert again.files_read == 0


def test_touching_a_file_rehashes_it_to_the_same_hash(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    hasher = settled(store)
    digest = hasher.hash_path(path)
    touch(path)
    assert hasher.hash_path(path) == digest
    assert hasher.files_read == 2
    hasher.flush()
    cached = store.stat_cache_get(str(path))
    assert cached is not None and cached[1] == path.stat().st_mtime_ns and cached[4] == digest


def test_changed_content_gets_a_new_hash(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    hasher = settled(None)
    before = hasher.hash_path(path)
    path.write_text("a,b\n1,3\n")  # same size
    assert hasher.hash_path(path) == blake3(b"a,b\n1,3\n").hexdigest() != before


def test_an_editor_save_with_the_old_size_and_mtime_is_noticed(tmp_path: Path) -> None:
    # Editors write a new file and rename it over the old one: a new inode. Even when size and
    # mtime are the old ones, the content is hashed again.
    path = tmp_path / "notes.txt"
    path.write_bytes(b"version 1")
    hasher = settled(None)
    assert hasher.hash_path(path) == blake3(b"version 1").hexdigest()
    old = path.stat()
    new = tmp_path / ".notes.txt.swp"
    new.write_bytes(b"version 2")
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(new, path)
    assert path.stat().st_size == old.st_size and path.stat().st_mtime_ns == old.st_mtime_ns
    assert hasher.hash_path(path) == blake3(b"version 2").hexdigest()


def test_a_file_changed_just_before_hashing_is_read_again_next_time(tmp_path: Path) -> None:
    # File times can be as coarse as the kernel's tick, so a rewrite of the same size right
    # after hashing could keep the stat key. (Kernels with fine-grained timestamps hide the
    # problem, which is why this checks the guard itself: a fresh file is not cached.)
    path = tmp_path / "fresh"
    path.write_bytes(b"aaaa")
    hasher = FileHasher(None)
    assert hasher.hash_path(path) == blake3(b"aaaa").hexdigest()
    assert hasher.take_new() == {}  # nothing for the store: the next build reads it again
    assert FileHasher(None, cache=hasher.take_new()).hash_path(path) == \
        blake3(b"aaaa").hexdigest()
    with open(path, "r+b") as f:  # same inode, same size
        f.write(b"bbbb")
    assert hasher.hash_path(path) == blake3(b"bbbb").hexdigest()


def test_a_fresh_files_hash_is_reused_in_the_same_process_until_forgotten(tmp_path: Path
                                                                          ) -> None:
    # a task's new output is hashed once in a build, not again as the next task's input
    path = tmp_path / "output"
    path.write_bytes(b"aaaa")
    hasher = FileHasher(None)
    assert hasher.hash_path(path) == blake3(b"aaaa").hexdigest()
    assert hasher.hash_files([str(path)]) == {str(path): blake3(b"aaaa").hexdigest()}
    assert hasher.files_read == 1
    hasher.forget_recent([path])  # what dev does for the paths its watcher reports
    assert hasher.hash_path(path) == blake3(b"aaaa").hexdigest()
    assert hasher.files_read == 2


def test_a_rewritten_outputs_fresh_hash_is_not_hidden_by_its_stored_one(tmp_path: Path
                                                                       ) -> None:
    # the common rebuild: last build's output is in the stat cache; the task writes it anew
    # and the new hash serves the rest of the build (as the next task's input, and the re-check)
    path = tmp_path / "output"
    path.write_bytes(b"old")
    stored = FileHasher(None, racy_ns=0)
    stored.hash_path(path)
    hasher = FileHasher(None, cache=stored.take_new())  # the next build, with that cache
    path.write_bytes(b"new content")
    new = blake3(b"new content").hexdigest()
    assert hasher.hash_files([str(path)]) == {str(path): new}
    assert hasher.hash_files([str(path)]) == {str(path): new}
    assert hasher.hash_path(path) == new
    assert hasher.files_read == 1


def claim_for(path: Path, digest: str) -> tuple[str, int, int, int, int, str]:
    """What a worker sends with DONE for an output it just wrote (worker_outputs.py)."""
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest)


def test_a_workers_hash_of_an_output_as_it_left_it_is_taken_without_reading(tmp_path: Path
                                                                           ) -> None:
    path = tmp_path / "output"
    path.write_bytes(b"written by the unit")
    digest = blake3(b"written by the unit").hexdigest()
    hasher = FileHasher(None)
    assert hasher.hash_files_claimed([str(path)], [claim_for(path, digest)]) == {
        str(path): digest}
    assert hasher.files_read == 0
    # and it serves the rest of the build, e.g. as the next task's input
    assert hasher.hash_files([str(path)]) == {str(path): digest}
    assert hasher.files_read == 0


def test_an_output_rewritten_after_its_worker_reported_is_hashed_again_not_trusted(
        tmp_path: Path) -> None:
    path = tmp_path / "output"
    path.write_bytes(b"as the unit wrote it")
    claim = claim_for(path, blake3(b"as the unit wrote it").hexdigest())
    path.write_bytes(b"rewritten by someone else since")  # a new stat key
    hasher = FileHasher(None)
    assert hasher.hash_files_claimed([str(path)], [claim]) == {
        str(path): blake3(b"rewritten by someone else since").hexdigest()}
    assert hasher.files_read == 1


def test_a_claim_for_a_path_now_gone_or_a_folder_is_not_taken(tmp_path: Path) -> None:
    gone, folder, other = tmp_path / "gone", tmp_path / "folder", tmp_path / "unclaimed"
    for path in (gone, folder):
        path.write_bytes(b"x")
    claims = [claim_for(gone, "f" * 64), claim_for(folder, "f" * 64)]
    gone.unlink()
    folder.unlink()
    make_tree(folder, {"a": b"1"})
    other.write_bytes(b"y")
    hasher = FileHasher(None)
    found = hasher.hash_files_claimed([str(gone), str(folder), str(other)], claims)
    assert found[str(gone)] is None
    assert found[str(folder)] == FileHasher(None).hash_path(folder)
    assert found[str(other)] == blake3(b"y").hexdigest()


def test_a_file_that_became_a_folder_or_vanished(tmp_path: Path) -> None:
    path = tmp_path / "thing"
    path.write_bytes(b"file")
    hasher = settled(None)
    assert hasher.hash_path(path) is not None
    path.unlink()
    assert hasher.hash_path(path) is None
    path.mkdir()
    (path / "inside").write_bytes(b"file")
    assert hasher.hash_path(path) not in (None, blake3(b"file").hexdigest())


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


TREE = {"a.txt": b"a", "sub/b.txt": b"b", "sub/deeper/c.bin": b"\x00c"}


def test_a_folder_hash_covers_names_and_contents_below_it(tmp_path: Path) -> None:
    hasher = settled(None)
    one = make_tree(tmp_path / "one", TREE)
    two = make_tree(tmp_path / "two", TREE)
    digest = hasher.hash_path(one)
    assert digest is not None and digest == hasher.hash_path(two)  # relative paths count
    (two / "sub" / "deeper" / "c.bin").rename(two / "sub" / "deeper" / "d.bin")
    renamed = hasher.hash_path(two)
    assert renamed != digest
    (two / "sub" / "deeper" / "d.bin").rename(two / "sub" / "deeper" / "c.bin")
    assert hasher.hash_path(two) == digest
    (two / "sub" / "b.txt").write_bytes(b"B")
    assert hasher.hash_path(two) not in (digest, renamed)
    (one / "new.txt").write_bytes(b"")
    assert hasher.hash_path(one) != digest


def test_a_folder_hash_ignores_pycache_and_empty_folders(tmp_path: Path) -> None:
    hasher = settled(None)
    tree = make_tree(tmp_path / "pkg", TREE)
    digest = hasher.hash_path(tree)
    make_tree(tree, {"__pycache__/a.cpython-311.pyc": b"junk", "sub/__pycache__/x.pyc": b"j"})
    (tree / "empty").mkdir()
    assert hasher.hash_path(tree) == digest


def test_a_folder_follows_links_to_files_and_skips_dangling_ones(tmp_path: Path) -> None:
    hasher = settled(None)
    target = make_tree(tmp_path / "elsewhere", {"t.txt": b"target"}) / "t.txt"
    tree = make_tree(tmp_path / "tree", {"a.txt": b"a"})
    digest = hasher.hash_path(tree)
    (tree / "dangling").symlink_to(tmp_path / "missing")
    assert hasher.hash_path(tree) == digest
    (tree / "link.txt").symlink_to(target)
    linked = hasher.hash_path(tree)
    assert linked != digest
    target.write_bytes(b"target changed")
    assert hasher.hash_path(tree) != linked


def test_hash_many_matches_one_by_one(tmp_path: Path, store: Store) -> None:
    files = {f"f{i}.bin": os.urandom(300_000 * (i + 1)) for i in range(6)}
    files["big.bin"] = os.urandom(BIG_FILE * 2)
    make_tree(tmp_path / "data", files)
    make_tree(tmp_path / "folder", TREE)
    paths = [tmp_path / "data" / name for name in files]
    paths += [tmp_path / "folder", tmp_path / "missing"]
    many = settled(store).hash_many(paths)
    one_by_one = {path: FileHasher(None).hash_path(path) for path in paths}
    assert many == one_by_one
    for name, data in files.items():
        assert many[tmp_path / "data" / name] == blake3(data).hexdigest()
    assert many[tmp_path / "missing"] is None


def test_cache_entries_reach_the_store_only_on_flush(tmp_path: Path, store: Store) -> None:
    tree = make_tree(tmp_path / "data", TREE)
    hasher = settled(store)
    hasher.hash_many([tree])
    assert store.stat_cache_all() == {}
    hasher.flush()
    assert set(store.stat_cache_all()) == {str(tree / rel) for rel in TREE}
    hasher.flush()  # nothing new: nothing written


def test_a_read_only_store_gives_its_cache_but_takes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x")
    with Store(tmp_path / ".watchrun") as writer:
        hasher = settled(writer)
        hasher.hash_path(path)
        hasher.flush()
    with Store(tmp_path / ".watchrun", readonly=True) as reader:
        hasher = settled(reader)
        assert hasher.hash_path(path) == blake3(b"x").hexdigest()
        assert hasher.files_read == 0
        touch(path)
        hasher.hash_path(path)
        hasher.flush()  # silently kept in memory only


def test_work_in_threads_keeps_the_order_and_raises_the_first_error() -> None:
    assert _map_in_threads(lambda n: n * n, list(range(50)), 3) == [n * n for n in range(50)]
    assert _map_in_threads(lambda n: n, [7], 4) == [7]
    started: list[int] = []

    def fail_at_five(n: int) -> int:
        started.append(n)
        if n == 5:
            raise PermissionError(13, "denied", f"f{n}")
        return n

    with pytest.raises(PermissionError):
        _map_in_threads(fail_at_five, list(range(1000)), 2)
    assert len(started) < 1000  # nothing new is started after the error


def test_hashing_many_files_needs_no_heavy_imports(tmp_path: Path) -> None:
    # a touched null build imports this module and hashes in threads: concurrent.futures (with
    # logging) and pathlib would cost it 25 ms
    for i in range(3):
        (tmp_path / f"f{i}").write_bytes(os.urandom(BIG_FILE // 2))
    script = ("import sys; from watchrun.state.hashing import FileHasher; "
              f"FileHasher(None).hash_many([{str(tmp_path)!r} + '/f' + str(i) for i in range(3)]); "
              "print(sorted({'pathlib', 'concurrent.futures', 'logging'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"
