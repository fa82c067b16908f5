"""`show` and `log`: a unit's stored output, a unit's captured output. Read-only.

`show` prints what the task returned as it is: a string byte for byte (so `watchrun show report
> report.md` is the file the task made), bytes as bytes, anything else as its repr. A generator,
or a task that runs once per iteration, lists its iterations unless `--iter` picks one.
"""

from __future__ import annotations

import json
import os
import pickle
import reprlib
import sys
from pathlib import Path
from typing import Any

from watchrun.commands.common import error, guarded, unknown_task_message
from watchrun.engine.locations import log_path
from watchrun.engine.scopes import decode_iteration, is_persistent
from watchrun.executors import taskmodules
from watchrun.project.model import Kind
from watchrun.session import EXIT_OK, Session, open_session
from watchrun.state.store import ObjectDamaged, UnitState, UnitStatus

SHORT = reprlib.Repr()
SHORT.maxstring = SHORT.maxother = 70
SHORT.maxlist = SHORT.maxtuple = SHORT.maxdict = SHORT.maxset = 6
LISTED = 50  # iterations listed in full before the rest is only counted
_CHUNK = 1 << 20


class Unloadable(Exception):
    """A stored output that cannot be read back here: the message says why."""


def _label(name: str, it: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in it)


def show_command(root: Path, name: str, it: tuple[int, ...], json_out: bool) -> int:
    def body() -> int:
        with open_session(root, "watchrun show", write=False) as session:
            project = session.project
            if name not in project.tasks:
                return error(unknown_task_message(name, project.tasks))
            if project.tasks[name].abstract:
                return error(f"'{name}' is abstract: it never runs and has no output of its "
                             "own (the tasks that extend it do)")
            taskmodules.install(os.fspath(project.config.root))
            if str(project.config.root) not in sys.path:
                sys.path.insert(0, str(project.config.root))
            try:
                return _show(session, name, it, json_out)
            except Unloadable as err:
                return error(str(err))

    return guarded(json_out, body)


def _show(session: Session, name: str, it: tuple[int, ...], json_out: bool) -> int:
    project, store = session.project, session.store
    task = project.tasks[name]
    top_generator = task.kind is Kind.GENERATOR and not project.graph.scope.get(name)
    if top_generator:
        values = _yields(session, name)
        if values is None:
            return error(f"'{name}' has not run yet: no iterations to show")
        if not it:
            yielded: list[tuple[tuple[int, ...], str]] = [
                ((i,), digest) for i, digest in enumerate(values)]
            if json_out:
                return _json_list(session, yielded, keyed=False)
            return _list(name, yielded, session)
        if len(it) != 1 or not 0 <= it[0] < len(values):
            return error(_out_of_range(name, it, len(values)))
        return _print(session, values[it[0]], json_out)
    scope = project.graph.scope.get(name) or ()
    if task.kind is Kind.GENERATOR and scope:
        return error(f"'{name}' is a generator inside the scope of '{scope[-1]}': its values "
                     "are not stored apart; show the tasks that follow it (with --iter)")
    scoped = bool(scope) and not is_persistent(project, name)
    if scoped and not it:
        units = sorted((s for s in store.unit_states(name) if s.output is not None),
                       key=lambda s: s.iter)
        if not units:
            return error(f"'{name}' runs once per iteration and none has an output yet")
        listed = [(s.iter, s.output or "") for s in units]
        if json_out:
            return _json_list(session, listed, keyed=True)
        return _list(name, listed, session)
    state = store.unit_state(name, it)
    if state is None or state.output is None:
        return error(_no_output(session, name, it, state, scoped))
    return _print(session, state.output, json_out)


def _no_output(session: Session, name: str, it: tuple[int, ...], state: UnitState | None,
               scoped: bool) -> str:
    if it and not scoped:
        return f"'{name}' does not run per iteration: show it without --iter"
    if it:
        done = [s.iter for s in session.store.unit_states(name)]
        if done and it not in done:
            return _out_of_range(name, it, len(done))
    if state is not None and state.status is UnitStatus.FAILED:
        return f"'{_label(name, it)}' failed in its last run: it has no output (see watchrun " \
               f"log {name}{''.join(f' --iter {i}' for i in it)})"
    if state is not None and state.status is UnitStatus.CANCELLED:
        return f"'{_label(name, it)}' has no output: its last run was cancelled " \
               f"(`watchrun status {name}` says what it needs to run)"
    return f"'{_label(name, it)}' has no stored output yet: it has not run"


def _out_of_range(name: str, it: tuple[int, ...], count: int) -> str:
    where = "".join(f"[{i}]" for i in it)
    span = f" (0 to {count - 1})" if count else ""
    return f"'{name}' has {count} iteration(s){span}: there is no iteration {where}"


def _yields(session: Session, name: str) -> list[str] | None:
    """The value hashes a top-level generator yielded in its last run."""
    state = session.store.unit_state(name)
    if state is None:
        return None
    return [decode_iteration(text)[1]
            for text in session.store.iterations(name, state.signature)]


def _list(name: str, units: list[tuple[tuple[int, ...], str]], session: Session) -> int:
    print(f"{name}: {len(units)} iteration(s); show one with --iter N")
    for key, digest in units[:LISTED]:
        try:
            text = SHORT.repr(_load(session, digest))
        except Unloadable as err:
            text = f"<{err}>"
        print(f"  {''.join(f'[{i}]' for i in key)} {text}")
    if len(units) > LISTED:
        print(f"  … and {len(units) - LISTED} more")
    return EXIT_OK


def _json_list(session: Session, units: list[tuple[tuple[int, ...], str]], keyed: bool
               ) -> int:
    """Every iteration's value as one JSON array (of {"iter", "value"} objects when `keyed`),
    written value by value."""
    encoder = json.JSONEncoder(default=repr, indent=2, ensure_ascii=False)
    out = sys.stdout
    out.write("[")
    for index, (key, digest) in enumerate(units):
        value = _load(session, digest)
        item = {"iter": list(key), "value": value} if keyed else value
        out.write(",\n" if index else "\n")
        for chunk in encoder.iterencode(item):
            out.write(chunk)
    out.write("\n]\n")
    return EXIT_OK


def _print(session: Session, digest: str, json_out: bool) -> int:
    value = _load(session, digest)
    out = sys.stdout
    if json_out:
        if isinstance(value, str):  # slice by slice: a big text is not copied whole
            out.write('"')
            for start in range(0, len(value), _CHUNK):
                out.write(json.dumps(value[start:start + _CHUNK], ensure_ascii=False)[1:-1])
            out.write('"\n')
            return EXIT_OK
        encoder = json.JSONEncoder(default=repr, indent=2, ensure_ascii=False)
        for chunk in encoder.iterencode(value):  # piece by piece: no second copy in memory
            out.write(chunk)
        out.write("\n")
    elif isinstance(value, str):
        out.flush()
        for start in range(0, len(value), _CHUNK):  # byte for byte: no newline added
            sys.stdout.buffer.write(value[start:start + _CHUNK].encode("utf-8",
                                                                       "surrogateescape"))
        sys.stdout.buffer.flush()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.flush()
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    else:
        out.write(repr(value) + "\n")
    return EXIT_OK


def _load(session: Session, digest: str) -> Any:
    """A stored output, unpickled. The store checks its bytes against its name first, and
    reads a big object from its file as it is unpickled, so `show` holds the value, not
    also its pickle."""
    try:
        return session.store.load_object(digest)
    except ObjectDamaged:
        raise Unloadable("the stored output was modified on disk (its bytes do not match its "
                         "name); the next build makes it again") from None
    except KeyError:
        raise Unloadable("the stored output is missing from the state folder; the next "
                         "build makes it again") from None
    except (AttributeError, ImportError, taskmodules.TaskModuleError) as exc:
        raise Unloadable(taskmodules.describe_unloadable(exc)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise Unloadable(f"the stored output cannot be read: {type(exc).__name__}: {exc}"
                         ) from None


# -- log ----------------------------------------------------------------------------------------

def log_command(root: Path, name: str, it: tuple[int, ...]) -> int:
    def body() -> int:
        with open_session(root, "watchrun log", write=False) as session:
            project = session.project
            if name not in project.tasks:
                return error(unknown_task_message(name, project.tasks))
            if project.tasks[name].abstract:
                return error(f"'{name}' is abstract: it never runs, so it has no log")
            config = project.config
            if it:
                return _print_log(session, name, it, labelled=False)
            states = sorted(session.store.unit_states(name), key=lambda s: s.iter)
            iterated = [s.iter for s in states if s.iter]
            if not iterated:
                return _print_log(session, name, (), labelled=False)
            code = EXIT_OK
            printed = 0
            for key in iterated:
                path = log_path(config, name, key)
                if os.path.exists(path) and os.path.getsize(path):
                    printed += 1
                    code = max(code, _print_log(session, name, key, labelled=True))
            if not printed:  # say it, rather than print nothing
                print(f"watchrun: none of the {len(iterated)} units of '{name}' printed "
                      f"anything (`watchrun log {name} --iter N` for one unit)", file=sys.stderr)
            return code

    return guarded(False, body)


def _print_log(session: Session, name: str, it: tuple[int, ...], labelled: bool) -> int:
    path = log_path(session.config, name, it)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        if session.store.unit_state(name, it) is None:
            return error(f"'{_label(name, it)}' has not run: no log")
        _print_failure(session, name, it)
        return EXIT_OK  # it ran and printed nothing
    except OSError as exc:
        return error(f"cannot read the log {path}: {exc.strerror or exc}")
    sys.stdout.flush()
    if labelled:
        sys.stdout.buffer.write(f"== {_label(name, it)} ==\n".encode())
    sys.stdout.buffer.write(data)
    if labelled and data and not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
    _print_failure(session, name, it)
    return EXIT_OK


def _print_failure(session: Session, name: str, it: tuple[int, ...]) -> None:
    """After the log of a unit whose last run failed: how it failed (the traceback is not part
    of what the task printed, so it goes to stderr, and stdout stays the captured output)."""
    state = session.store.unit_state(name, it)
    if state is not None and state.status is UnitStatus.FAILED and state.error:
        print(f"--- {_label(name, it)} failed ---\n{state.error.rstrip()}", file=sys.stderr)
