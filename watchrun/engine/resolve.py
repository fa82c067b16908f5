"""Deciding clean or dirty for one unit: signatures, stored results and the reasons.

The scheduler, `status` and `--dry-run` all go through `Resolver.resolve`, so they agree.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from blake3 import blake3

from watchrun.engine.reasons import Reason, ReasonKind
from watchrun.engine.scopes import is_persistent
from watchrun.engine.signatures import Manifest, canonical_json, explain, task_prefix
from watchrun.executors.follow import Follow
from watchrun.executors.worker_outputs import OutputHash
from watchrun.project.inputs import expand_inputs, has_magic, with_exclusions
from watchrun.project.loader import Project
from watchrun.project.model import Task
from watchrun.state.hashing import FileHasher, UnreadablePath
from watchrun.state.signing import static_identity, unit_signature
from watchrun.state.store import ResultRecord, Store, UnitState, UnitStatus

# a task's inputs as given, their absolute paths, its outputs' absolute paths (paths_of)
TaskPaths = tuple[list[str], list[str], list[str]]


class Resolution:
    """A unit's signature, and whether it is clean (then the result found) or why not."""

    def __init__(self, task: str, iter: tuple[int, ...], signature: str,
                 make_manifest: Callable[[], Manifest], static: str, upstream: dict[str, str],
                 inputs: dict[str, str | None], result: ResultRecord | None, clean: bool,
                 explain_dirty: Callable[[], list[Reason]] | None = None) -> None:
        self.task = task
        self.iter = iter
        self.signature = signature
        self.make_manifest = make_manifest  # built only when needed: a clean unit never is
        self.static = static  # manifest.identity()
        self.upstream = upstream
        self.inputs = inputs
        self.result = result  # the stored result for this signature, if clean
        self.clean = clean
        # why a dirty unit must run, worked out when first asked for: a unit's job can be on
        # its way before its history is read to explain it (see Scheduler._launch)
        self.explain_dirty = explain_dirty

    def __repr__(self) -> str:
        return f"Resolution({self.task!r}, {self.iter!r}, clean={self.clean})"

    @functools.cached_property
    def manifest(self) -> Manifest:
        return self.make_manifest()

    @functools.cached_property
    def reasons(self) -> list[Reason]:
        return [] if self.explain_dirty is None else self.explain_dirty()

    def unit_manifest(self, with_upstream: bool = True) -> tuple[str, bytes]:
        """(id, blob) of what is stored with the unit's state to explain it next time.
        Iteration units leave out their upstream values, so that all iterations of a task
        share one manifest row."""
        # the canonical JSON of {"m": manifest, "up": upstream}, without decoding the
        # manifest's own canonical JSON to encode it again
        upstream = canonical_json(self.upstream if with_upstream else None)
        blob = b'{"m":' + self.manifest.to_bytes() + b',"up":' + upstream.encode() + b"}"
        return blake3(blob).hexdigest(), blob


class _KnownResults:
    """What the store holds for a task's units, read in bulk (see `_stored_result`)."""

    __slots__ = ("recorded", "records", "signatures")

    def __init__(self, records: dict[str, ResultRecord]) -> None:
        self.records = records  # by signature: those under the last signatures
        self.signatures: set[str] | None = None  # every signature with a result (first miss)
        self.recorded: set[str] = set()  # results this build recorded


def _is_simple_relative(path: str) -> bool:
    """A relative posix path that normalising leaves as it is ("out/a.txt", not "./a",
    "a/../b", "a//b" or "a/")."""
    return (os.sep == "/" and not path.startswith("/") and not path.endswith("/")
            and "//" not in path and path != "." and path != ".."
            and not any(part in (".", "..") for part in path.split("/")))


class Resolver:
    def __init__(self, project: Project, store: Store, hasher: FileHasher) -> None:
        self.project = project
        self.root = project.config.root
        self.store = store
        self.hasher = hasher
        self._manifests: dict[str, tuple[Manifest, dict[str, str]] | None] = {}
        # by task name, with the tuple (of the task object) they were computed from
        self._outputs: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self._plain: dict[str, tuple[tuple[str, ...], tuple[list[str], list[str]] | None]] = {}
        self._static: dict[str, tuple[Callable[[], Manifest], str, dict[str, str | None]]] = {}
        self._prefixes: dict[str, str] = {}
        self._states: dict[str, dict[tuple[int, ...], UnitState]] = {}  # iterations, by task
        self._top_states: dict[str, UnitState] | None = None  # units outside any scope
        self._results: dict[str, _KnownResults] | None = None  # by task: see _stored_result
        self._signatures: dict[tuple[str, tuple[int, ...]], str] | None = None  # last_signature
        # task -> a key: what this resolver held of its units at the keys before it is
        # dropped (their iterations are released, see Streaming._release_committed): the
        # store answers for them
        self._released: dict[str, tuple[int, ...]] = {}
        # What this build's signatures were made of, for the null-build proof (nullproof.py):
        # absolute path -> the hash used, and task -> (its input patterns, what they matched).
        self.observed: dict[str, str | None] = {}
        self.expansions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.unsteady = False  # a path hashed to two values (or a glob matched two sets)
        self._input_paths: set[str] = set()  # observed as some task's input
        # the only tasks this build may resolve, when they are few (the others are covered by
        # the last build's proof, engine/proven.py): what its bulk reads ask the store for
        self.only: tuple[str, ...] | None = None

    # -- inputs and outputs ------------------------------------------------------------------
    def input_paths(self, task: Task) -> list[Path]:
        """What `run(inputs)` receives: the matched paths as `pathlib.Path`s."""
        return [Path(p) for p in self.input_strs(task)]

    def input_strs(self, task: Task) -> list[str]:
        """Every file or folder the task's input globs match now, sorted, as given (relative
        globs give paths relative to the root, absolute globs absolute paths)."""
        return expand_inputs(with_exclusions(task.inputs, task.outputs), str(self.root))

    def hash_inputs(self, task: Task) -> dict[str, str | None]:
        try:
            paths, absolute, hashes = self._input_hashes(task)
        except UnreadablePath as exc:  # a symlink loop, no permission: where it was asked for
            origin = task.field_origins.get("inputs")
            exc.where = (str(origin.file), origin.line) if origin else (str(task.path), None)
            raise
        expansion = (with_exclusions(task.inputs, task.outputs), tuple(paths))
        if self.expansions.setdefault(task.name, expansion) != expansion:
            self.unsteady = True
        self._observe(hashes)
        self._input_paths.update(absolute)
        return {p: hashes[a] for p, a in zip(paths, absolute, strict=True)}

    def _input_hashes(self, task: Task) -> tuple[list[str], list[str], dict[str, str | None]]:
        """(matched paths as given, their absolute paths, hash by absolute path). Plain paths
        (the common case) are hashed straight away: a path whose hash is None does not exist,
        which is what expanding them would have found with a stat of its own."""
        plain = self._plain_inputs(task)
        if plain is not None:
            given, absolute = plain
            try:
                hashes = self.hasher.hash_files(absolute)
            except OSError:  # e.g. not allowed to look: expanding says it is not there
                pass
            else:
                kept = [i for i, a in enumerate(absolute) if hashes[a] is not None]
                if len(kept) == len(absolute):
                    return given, absolute, hashes
                return [given[i] for i in kept], [absolute[i] for i in kept], hashes
        paths = self.input_strs(task)
        root = str(self.root)
        absolute = [p if os.path.isabs(p) else os.path.join(root, p) for p in paths]
        return paths, absolute, self.hasher.hash_files(absolute)

    def _plain_inputs(self, task: Task) -> tuple[list[str], list[str]] | None:
        """A task's inputs as expand_inputs would give them if they all exist, with their
        absolute paths; None if a pattern is a glob (computed once per task and project)."""
        known = self._plain.get(task.name)
        if known is not None and known[0] is task.inputs:
            return known[1]
        plain: tuple[list[str], list[str]] | None = None
        if not any(has_magic(p) for p in task.inputs):
            given = sorted({p for p in task.inputs if "__pycache__" not in p})
            root = str(self.root)
            plain = (given, [p if os.path.isabs(p) else os.path.join(root, p) for p in given])
        self._plain[task.name] = (task.inputs, plain)
        return plain

    def paths_of(self, task: Task) -> TaskPaths | None:
        """(its inputs as given, their absolute paths, its outputs' absolute paths): what a
        task reads and writes now, without hashing any (None: an input cannot be listed)."""
        plain = self._plain_inputs(task)
        if plain is not None:
            given, absolute = plain
        else:
            try:
                given = self.input_strs(task)
            except (OSError, UnreadablePath):
                return None
            root = str(self.root)
            absolute = [p if os.path.isabs(p) else os.path.join(root, p) for p in given]
        return given, absolute, list(self.output_paths(task).values())

    def adopt_observed(self, task: Task, paths: TaskPaths, hashes: dict[str, str]) -> None:
        """A task the last build's proof covers (engine/proven.py) is not resolved: what that
        build observed of its files (`paths`, from paths_of; `hashes`: absolute path -> hash,
        "" for missing) is what this build observed, for the proof it leaves."""
        given, absolute, outputs = paths
        kept = [(g, a) for g, a in zip(given, absolute, strict=True) if hashes[a]]
        self.expansions.setdefault(task.name, (with_exclusions(task.inputs, task.outputs),
                                               tuple(g for g, _ in kept)))
        for path in (*absolute, *outputs):
            self.observed[path] = hashes[path] or None
        self._input_paths.update(a for _, a in kept)

    def output_paths(self, task: Task) -> dict[str, str]:
        """Declared outputs: root-relative posix name -> absolute path (computed once per task
        and project)."""
        known = self._outputs.get(task.name)
        if known is not None and known[0] is task.outputs:
            return known[1]
        paths: dict[str, str] = {}
        root = str(self.root)
        for out in task.outputs:
            if _is_simple_relative(out):  # the common case: no normalising needed
                paths[out] = os.path.join(root, out)
                continue
            path = os.path.normpath(out if os.path.isabs(out) else os.path.join(root, out))
            inside = path.startswith(root + os.sep)
            rel = os.path.relpath(path, root) if inside else path
            paths[rel.replace(os.sep, "/")] = path
        self._outputs[task.name] = (task.outputs, paths)
        return paths

    def hash_outputs(self, task: Task, produced: bool = False,
                     claims: Sequence[OutputHash] = ()) -> dict[str, str | None]:
        """`produced`: the task has just written them, so they may differ from what was
        seen before it ran (but not from what another task took as its input). `claims`:
        the hashes its worker sent with DONE, used where the files are as it left them."""
        paths = self.output_paths(task)
        if not paths:
            return {}
        hashes = self.hasher.hash_files_claimed(list(paths.values()), claims)
        self._observe(hashes, produced)
        return {rel: hashes[p] for rel, p in paths.items()}

    def _observe(self, hashes: dict[str, str | None], produced: bool = False) -> None:
        observed = self.observed
        for path, digest in hashes.items():
            if path in observed and observed[path] != digest and (
                    not produced or path in self._input_paths):
                self.unsteady = True  # it changed while the build looked at it
            observed[path] = digest

    # -- signatures --------------------------------------------------------------------------
    def static(self, name: str) -> tuple[Callable[[], Manifest], str, dict[str, str | None]]:
        """A factory of the task-level manifest, its identity and the input hashes (computed
        once per build: the scheduler calls `forget_static` when inputs may have changed)."""
        cached = self._static.get(name)
        if cached is None:
            task = self.project.tasks[name]
            inputs = self.hash_inputs(task)
            prefix = self._prefix(task)

            built: list[Manifest] = []

            def make(task: Task = task, inputs: dict[str, str | None] = inputs) -> Manifest:
                if not built:  # once per task and inputs, however many units ask
                    built.append(Manifest.build(task, self.project.closures[task.name], inputs,
                                                self.root))
                return built[0]

            cached = (make, static_identity(prefix, inputs), inputs)
            self._static[name] = cached
        return cached

    def _prefix(self, task: Task) -> str:
        prefix = self._prefixes.get(task.name)
        if prefix is None:
            closure = self.project.closures[task.name]
            params = {k: p.value for k, p in task.params.items()}
            prefix = task_prefix(closure.digest, params, task.kind.value, sorted(task.after))
            self._prefixes[task.name] = prefix
        return prefix

    def follow(self, name: str, leader: str, leader_label: str, upstream: dict[str, str],
               forced: bool) -> Follow | None:
        """What decides, once the unit `leader` (outside any scope) has run, whether the
        unit of task `name` (outside any scope) must run (executors/follow.py): its
        signature as `resolve` will make it, but for the hashes of the files the leader
        writes. None if its inputs are not plain paths or none of them is the leader's."""
        task = self.project.tasks[name]
        plain = self._plain_inputs(task)
        if plain is None:
            return None
        written = set(self.output_paths(self.project.tasks[leader]).values())
        read = {given: path for given, path in zip(*plain, strict=True) if path in written}
        if not read:
            return None
        others = [path for path in plain[1] if path not in written]
        try:
            hashes = self.hasher.hash_files(others)
        except OSError:
            return None
        inputs = {given: digest for given, path in zip(*plain, strict=True)
                  if path not in written and (digest := hashes[path]) is not None}
        known = self._known_results(name)
        if known.signatures is None:
            self._read_signatures_outside_scopes()
        stored = frozenset() if forced else frozenset(
            (known.signatures or set()) | known.records.keys())
        return Follow(leader_label, self._prefix(task), inputs, read, dict(upstream), stored)

    def forget_static(self, name: str | None = None) -> None:
        """Inputs (or, with a new project, code and params) may have changed."""
        if name is None:
            self._static.clear()
            self._prefixes.clear()
        else:
            self._static.pop(name, None)
            self._prefixes.pop(name, None)

    def resolve(self, name: str, upstream: dict[str, str], iter: tuple[int, ...] = (),
                value: str | None = None, forced: bool = False) -> Resolution:
        task = self.project.tasks[name]
        make_manifest, static, inputs = self.static(name)
        signature = unit_signature(static, upstream, value)
        result = self._stored_result(name, signature, in_scope=bool(iter))
        outputs_now = self.hash_outputs(task) if result is not None and (
            result.outputs or task.outputs) else {}
        if result is not None and not forced and result.stored and all(
                outputs_now.get(path) == digest for path, digest in result.outputs.items()) \
                and (len(result.outputs) == len(outputs_now) or _all_there(outputs_now)):
            # clean: the common case of a null build needs no history to explain anything
            return Resolution(name, iter, signature, make_manifest, static, upstream, inputs,
                              result, True)
        # dirty: no result for this signature, an output changed, or forced (explain finds
        # at least one of these, so it never says clean here)
        last = self.last_state(name, iter)  # read now: the unit's next state replaces it

        def explain_dirty() -> list[Reason]:
            last_manifest, last_upstream = self._last_manifest(last)
            reasons = explain(make_manifest(), upstream, last, last_manifest, last_upstream,
                              result, outputs_now, forced, self._other_last_result(last, result))
            if result is not None:  # declared outputs its result never recorded (made by
                # an older watchrun, which let a unit succeed without writing them)
                reasons += [Reason(ReasonKind.OUTPUT_MISSING, path)
                            for path, digest in sorted(outputs_now.items())
                            if digest is None and path not in result.outputs]
            args = self.project.graph.upstreams.get(name, {})
            return [r._replace(subject=args.get(r.subject, r.subject))
                    if r.kind is ReasonKind.UPSTREAM_CHANGED else r for r in reasons
                    ] + self._unmatched(task)

        return Resolution(name, iter, signature, make_manifest, static, upstream, inputs, None,
                          False, explain_dirty)

    def _unmatched(self, task: Task) -> list[Reason]:
        """An input glob that matches no file, or an input path that is not there: worth
        saying beside why the unit runs (a typo otherwise runs the task on nothing,
        silently)."""
        root = str(self.root)
        return [Reason(ReasonKind.NO_MATCH, pattern) for pattern in task.inputs
                if (not expand_inputs([pattern], root) if has_magic(pattern)
                    else not os.path.lexists(os.path.join(root, pattern)))]

    def _stored_result(self, name: str, signature: str, in_scope: bool) -> ResultRecord | None:
        """The stored result for a unit's signature. At the first unit resolved, the results
        under the latest signature of every unit are read in one query: a null build finds each
        there (not one query per unit). A miss asks the store; for an
        iteration unit, at its task's first miss, for the set of every signature the task has a
        result for (a first build of 10,000 iterations would otherwise ask for each result that
        is not there)."""
        known = self._known_results(name)
        found = known.records.get(signature)
        if found is not None:
            return found
        if in_scope and name in self._released and known.signatures is not None \
                and signature not in known.signatures:
            # a released unit's signature left the set: the store says whether it has one
            return self.store.find_result(name, signature)
        if known.signatures is None:  # the first miss: which signatures have a result at all
            if in_scope:
                known.signatures = self.store.result_signatures(name) | known.recorded
            else:
                self._read_signatures_outside_scopes()
                assert known.signatures is not None
        if signature not in known.signatures:
            return None
        return self.store.find_result(name, signature)

    def _read_signatures_outside_scopes(self) -> None:
        """At the first miss of a unit outside any scope, the signatures with a result of
        every task but those with iteration units, in one query: a first build of 1,000 tasks
        would otherwise ask the store 1,000 times for results that are not there."""
        graph = self.project.graph
        iterated = {name for name, scope in graph.scope.items()
                    if scope and not is_persistent(self.project, name)}
        found = self.store.result_signatures_except(iterated, self.only)
        for name in self.project.tasks if self.only is None else self.only:
            known = self._known_results(name)
            if name not in iterated and known.signatures is None:
                known.signatures = found.get(name, set()) | known.recorded

    def _known_results(self, name: str) -> _KnownResults:
        by_task = self._results
        if by_task is None:
            self._read_last_units()
            by_task = self._results
            assert by_task is not None
        known = by_task.get(name)
        if known is None:
            known = by_task[name] = _KnownResults({})
        return known

    def note_result(self, record: ResultRecord) -> None:
        """A result just recorded (it may replace one read before, under the same signature).
        Only its signature is kept: a scope of 100,000 new results would otherwise all stay in
        memory, for lookups that hardly ever come (the store answers those)."""
        known = self._results.get(record.task) if self._results is not None else None
        if known is not None:
            known.records.pop(record.signature, None)
            known.recorded.add(record.signature)
            if known.signatures is not None:
                known.signatures.add(record.signature)

    def last_state(self, name: str, iter: tuple[int, ...]) -> UnitState | None:
        """The latest recorded state of a unit. The states of every unit outside a scope are
        read in one query the first time one is asked for, a scope's states in one query per
        task (10,000 iterations are one query, not 10,000); `note_state` keeps them current."""
        if not iter:
            top = self._top_states
            if top is None:
                top = self._top_states = {
                    s.task: s for s in self.store.top_level_states(self.only)}
            return top.get(name)
        if iter < self._released.get(name, ()):
            return self.store.unit_state(name, iter)
        states = self._states.get(name)
        if states is None:
            states = {s.iter: s for s in self.store.unit_states(name)}
            self._states[name] = states
        return states.get(iter)

    def release(self, name: str, keys: list[tuple[int, ...]]) -> None:
        """Drop what is held of these units of a task (their iterations are finished and
        committed): their states, last signatures and the signatures of their results. The
        store answers for them from now on (`last_state`, `last_signature`,
        `_stored_result`)."""
        states = self._states.get(name)
        signatures = self._signatures
        known = self._results.get(name) if self._results is not None else None
        for key in keys:
            if states is not None:
                states.pop(key, None)
            signature = signatures.pop((name, key), None) if signatures is not None else None
            if signature is not None and known is not None:
                known.recorded.discard(signature)
                if known.signatures is not None:
                    known.signatures.discard(signature)
            if key and not key < self._released.get(name, ()):
                self._released[name] = (*key[:-1], key[-1] + 1)

    def note_state(self, state: UnitState) -> None:
        if not state.iter and self._top_states is not None:
            self._top_states[state.task] = state
        states = self._states.get(state.task)
        if states is not None:
            states[state.iter] = state
        if self._signatures is not None:
            self._signatures[(state.task, state.iter)] = state.signature

    def last_signature(self, name: str, iter: tuple[int, ...]) -> str | None:
        """The signature of a unit's latest state. Every unit's is read in one query the first
        time one is asked for (a null build asks for each), and kept current by `note_state`."""
        found = self._all_signatures().get((name, iter))
        if found is None and iter and iter < self._released.get(name, ()):
            state = self.store.unit_state(name, iter)
            return None if state is None else state.signature
        return found

    def _all_signatures(self) -> dict[tuple[str, tuple[int, ...]], str]:
        if self._signatures is None:
            self._read_last_units()
            assert self._signatures is not None
        return self._signatures

    def _read_last_units(self) -> None:
        """Every unit's latest signature and the results under them, in one query."""
        signatures, results = self.store.last_units(self.only)
        if self._signatures is None:
            self._signatures = signatures
        if self._results is None:
            by_task: dict[str, _KnownResults] = {}
            for record in results:
                known = by_task.get(record.task)
                if known is None:
                    known = by_task[record.task] = _KnownResults({})
                known.records[record.signature] = record
            self._results = by_task

    def _other_last_result(self, last: UnitState | None, result: ResultRecord | None
                           ) -> ResultRecord | None:
        """The result of the unit's last run when it had another signature than `result`'s
        (None otherwise): whose outputs may be the files found now."""
        if last is None or result is None or last.signature == result.signature \
                or last.status is not UnitStatus.OK:
            return None
        return self.store.find_result(last.task, last.signature)

    def _last_manifest(
        self, last: UnitState | None
    ) -> tuple[Manifest | None, dict[str, str] | None]:
        if last is None or not last.manifest:
            return None, None
        if last.manifest not in self._manifests:
            blob = self.store.get_manifest(last.manifest)
            entry = None
            if blob is not None:
                try:
                    body = json.loads(blob)
                    entry = (Manifest(**body["m"]), body["up"])
                except (ValueError, TypeError, KeyError):
                    entry = None  # written by another version: nothing to compare with
            self._manifests[last.manifest] = entry
        entry = self._manifests[last.manifest]
        return (entry[0], entry[1]) if entry else (None, None)

    def inputs_unchanged(self, name: str, before: dict[str, str | None]) -> bool:
        """Race-safe completion: the tracked inputs as the unit finishes equal those it
        started with."""
        return self.hash_inputs(self.project.tasks[name]) == before


def _all_there(outputs: dict[str, str | None]) -> bool:
    return all(digest is not None for digest in outputs.values())

