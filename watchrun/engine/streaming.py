"""Generators and their scopes' consumers (collectors, inner generators): starting,
replaying stored iterations, pushing values in iteration order, deciding a replayed consumer."""

from __future__ import annotations

import time

from watchrun.engine import events as ev
from watchrun.engine.dispatch import entry_args, wanted_names
from watchrun.engine.driver_state import (
    DriverState,
    Launched,
    Replay,
)
from watchrun.engine.readiness import DenseKeys, Keys
from watchrun.engine.resolve import Resolution
from watchrun.engine.scopes import (
    Consumer,
    Key,
    contribution,
    decode_iteration,
    finished_by_consumers,
)
from watchrun.executors.base import (
    Mode,
    UnitKey,
)
from watchrun.project.model import Kind
from watchrun.state.store import ObjectWriteError

FRESH_ONE = 1 << 16  # values this big are read back from the store when wanted
FRESH_BYTES = 32 << 20  # the recent values kept in memory, in all
FRESH_COUNT = 1 << 16  # and how many: a generator runs thousands of values ahead of its items
REPLAY_READ = 512  # stored iterations read at once (a value hash each: some 100 bytes)
REPLAY_COMMIT = 4096  # iterations of a clean generator replayed between two commits (releases)


class Streaming(DriverState):
    """The driver's part that streams a scope from its generator to its consumers."""

    # -- generators --------------------------------------------------------------------------
    def _start_generator(self, resolution: Resolution) -> None:
        name = resolution.task
        self.readiness.keys_of(name)
        self._gen_signatures[name] = resolution.signature  # where its iterations are stored
        complete = self.store.generator_complete(name, resolution.signature)
        if complete is not None and resolution.clean:
            self._skip(name, (), resolution)
            self._replaying[name] = Replay(resolution.signature, complete)
            self._replay_more()
            return
        if self.options.dry_run:
            self._would_run(resolution)
            return
        self.live.add(name)
        self.plan.want(UnitKey(name, resolution.iter), resolution)
        self._consumers_of_scope(name)  # they can start streaming now

    def _replay(self, name: str, signature: str, upto: int | None = None) -> int:
        stored = self.store.iterations(name, signature)
        if upto is not None:
            stored = stored[:upto]
        for text in stored:
            key, value = decode_iteration(text)
            self._new_iteration(name, key, value)
        return len(stored)

    def _replay_more(self) -> None:
        """The stored iterations of the clean generators, a window at a time, while the plan
        does not hold them: the same bound on what waits to run as a running generator's
        (a rebuild after an edit below a generator of 1,000,000 items would otherwise read
        them all at once). Called again by the pump; the last one ends the generator."""
        for name in list(self._replaying):
            replay = self._replaying.get(name)
            if replay is None or replay.busy:
                continue  # ended, or replaying already (a pump from within its wake-ups)
            if self.stopping or name not in self.needed \
                    or self._gen_signatures.get(name) != replay.signature:
                del self._replaying[name]  # stopped, or planned again (dev)
                continue
            replay.busy = True
            try:
                self._replay_window(name, replay)
            finally:
                replay.busy = False

    def _replay_window(self, name: str, replay: Replay) -> None:
        # a dry run runs nothing: no unit of the scope ever ends to let the replay go on, and
        # nothing waits to run either (a unit that would run is decided once resolved), so
        # the window does not bound it
        tasks = [] if self.options.dry_run else self._scope_tasks(name)
        while not self.plan.held(name):
            if tasks and replay.next >= 2 * self.plan.window + min(
                    self.readiness.finished.get(task, 0) for task in tasks):
                return  # far enough ahead of its slowest task: a unit's end comes back here
            if not replay.read:  # read ahead of the window: one query for many windows
                replay.read = self.store.iterations_from(name, replay.signature, replay.next,
                                                         REPLAY_READ)
            # a window at a time while its units wait to run; while they are all clean
            # (nothing waits), twice as many each turn: a clean scope of 10,000 items is not
            # replayed in 1,250 turns of the loop
            window = self.plan.window
            replay.chunk = min(replay.chunk * 2, REPLAY_READ) if replay.clean else window
            stored, replay.read = replay.read[:replay.chunk], replay.read[replay.chunk:]
            wants, skipped = self.plan.wants, self.summary.skipped
            self._background = True  # its units are queued, and resolved by one drain
            try:
                for text in stored:
                    key, value = decode_iteration(text)
                    replay.next += 1
                    self._new_iteration(name, key, value)
            finally:
                self._background = False
            if self._checks and self._current is None and self._resume is None:
                self._drain()  # its pump leaves this replay be (busy): no recursion
            # all its units were resolved now, found clean, and none has to run (in a dry
            # run, resolved is enough: a unit that would run is said, not waited for)
            resolved = not (self._checks or self._urgent)
            all_clean = self.plan.wants == wants \
                and self.summary.skipped - skipped >= len(stored)
            replay.clean = resolved and (self.options.dry_run or all_clean)
            if not stored or replay.next >= replay.count:
                del self._replaying[name]
                self._generator_done(name)
                return
            if not replay.clean:
                return  # units to run: the next turn comes with the pump after one ends
            if self._urgent or self._checks:
                return  # its units are resolved first; the drain's pump comes back here
            if replay.next - replay.committed >= REPLAY_COMMIT:
                replay.committed = replay.next
                self.flush()  # clean units record nothing: commit, so that they release

    def _new_iteration(self, name: str, key: Key, value: str) -> None:
        self.bus.publish(ev.Iteration(task=name, iter=key))
        self._wake(self.readiness.iteration(name, key, value))

    def _generator_done(self, name: str) -> None:
        self._wake(self.readiness.generator_done(name))
        self._consumers_of_scope(name)

    def _consumers_of_scope(self, gen: str) -> None:
        for consumer in self.consumers.values():
            if consumer.generator == gen:
                self._advance(consumer)

    # -- consumers (collectors, inner generators) --------------------------------------------
    def _new_consumer(self, name: str) -> None:
        scope = self.graph.scope.get(name, ())
        in_scope: dict[str, str] = {}
        fixed: dict[str, str] = {}
        for arg, up in self.graph.upstreams.get(name, {}).items():
            (in_scope if contribution(self.project, up) else fixed)[arg] = up
        self.consumers[name] = Consumer(name, scope[-1], in_scope, fixed)

    def _scope_values(self, c: Consumer, key: Key) -> dict[str, str] | None:
        values = {}
        for arg, up in c.in_scope.items():
            value = self.readiness.value(up, key[: self._depth(up)])
            if value is None:
                return None
            values[arg] = value
        return values

    def _advance(self, c: Consumer) -> None:
        if self.stopping or c.blocked or c.ended:
            return
        fixed = self._upstream_values(c.name, (), in_scope=False)
        if fixed is None:
            return
        if not c.live and not c.deferred:
            if UnitKey(c.name) in self.running:
                return  # its stale predecessor is still being cancelled: once it has ended
            if c.generator in self.live and not self.options.dry_run:
                self._start_consumer(c, fixed, None)  # stream pushes as values arrive
            elif c.generator in self.gen_done or c.generator in self._replaying:
                c.deferred = True  # replayed: decide clean or run once the scope is known
            else:
                return  # the generator has not started yet
        keys = self.keys.get(c.generator, [])
        self._push_known(c, fixed, keys)
        if c.generator not in self.gen_done or c.pushed < len(keys):
            return
        if c.deferred:
            self._decide_deferred(c, fixed)
        elif c.live:
            c.ended = True
            self.executor.end_input(UnitKey(c.name))
        self._pump()

    def _push_known(self, c: Consumer, fixed: dict[str, str], keys: Keys) -> None:
        """Take the scope's values in key order, as far as they are known."""
        while c.pushed < len(keys):
            key = keys[c.pushed]
            values = self._scope_values(c, key)
            if values is None:
                break
            if c.deferred and not self.options.dry_run and self._new_in_scope(c, key):
                self._go_live(c, fixed, keys)
            c.add_to_sequence(key, values)
            if c.live:
                self._push(c, values)
            c.pushed += 1

    def _new_in_scope(self, c: Consumer, key: Key) -> bool:
        """A value this consumer is pushed at `key` differs from the one it had last time."""
        return any((up, key[: self._depth(up)]) in self.new_values
                   for up in c.in_scope.values())

    def _go_live(self, c: Consumer, fixed: dict[str, str], keys: Keys) -> None:
        """A deferred consumer (its scope replayed from the store) whose scope has a new
        value must run: it starts now and takes the values so far, rather than waiting for
        the whole scope, so the rest of the scope streams through it (and on below it)."""
        c.deferred = False
        self._start_consumer(c, fixed, None)
        for key in keys[: c.pushed]:
            values = self._scope_values(c, key)
            assert values is not None
            self._push(c, values)

    def _decide_deferred(self, c: Consumer, fixed: dict[str, str]) -> None:
        c.deferred = False
        resolution = self.resolver.resolve(c.name, fixed, (), c.sequence.hexdigest(),
                                           forced=c.name in self.forced)
        task = self.project.tasks[c.name]
        if task.kind is Kind.GENERATOR:
            complete = self.store.generator_complete(c.name, resolution.signature)
            if complete is not None and resolution.clean:
                c.ended = True
                self.readiness.keys_of(c.name)
                self._skip(c.name, (), resolution)
                self._replay(c.name, resolution.signature)
                self._generator_done(c.name)
                return
        elif resolution.clean and resolution.result is not None:
            c.ended = True
            self._skip(c.name, (), resolution)
            self._set_value(c.name, (), resolution.result.output)
            return
        if self.options.dry_run:
            c.ended = True
            self._would_run(resolution)
            return
        # run it, pushing every stored value again (its upstream units are not rerun)
        self._start_consumer(c, fixed, resolution)
        for key in self.keys.get(c.generator, []):
            values = self._scope_values(c, key)
            assert values is not None
            self._push(c, values)
        c.ended = True
        self.executor.end_input(UnitKey(c.name))

    def _start_consumer(self, c: Consumer, fixed: dict[str, str],
                        resolution: Resolution | None) -> None:
        if resolution is None:  # live: the signature is known only at the end
            resolution = self.resolver.resolve(c.name, fixed, (), "live",
                                               forced=c.name in self.forced)
        c.live = True
        c.started = time.monotonic()
        task = self.project.tasks[c.name]
        mode = Mode.COLLECT if task.kind is Kind.COLLECTOR else Mode.INNER_GENERATE
        job = self._job(resolution, mode, skip=set(c.in_scope))
        end = "gather" if mode is Mode.COLLECT else "finish"
        offered = self._offered(task, exclude=set(c.in_scope))
        for arg in wanted_names(entry_args(self.project, task, end), offered):
            job.gather_kwargs[arg] = offered[arg]()
        self._launch(job, resolution, mode)
        if task.kind is Kind.GENERATOR:  # an inner generator: its own consumers may stream
            self.readiness.keys_of(c.name)
            self.live.add(c.name)
            self._consumers_of_scope(c.name)

    def _push(self, c: Consumer, values: dict[str, str]) -> None:
        args = self._info(self.project.tasks[c.name])[0]
        kwargs = {arg: self._object(h) for arg, h in values.items()
                  if arg in wanted_names(args, [arg])}
        self.executor.push(UnitKey(c.name), kwargs)

    def _object(self, digest: str) -> bytes:
        data = self._fresh.get(digest)
        return data if data is not None else self.store.get_object(digest)

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) >= FRESH_ONE or digest in self._fresh:
            return
        self._fresh[digest] = data
        self._fresh_bytes += len(data)
        while self._fresh_bytes > FRESH_BYTES or len(self._fresh) > FRESH_COUNT:
            oldest = next(iter(self._fresh))
            self._fresh_bytes -= len(self._fresh.pop(oldest))

    def _yielded(self, name: str, run: Launched, data: bytes | tuple[str, str]) -> None:
        try:
            value = self._put_pickle(data)
        except ObjectWriteError as exc:  # the generator fails with the message, once stopped
            if run.failure is None:
                run.failure = str(exc)
                self.executor.cancel(UnitKey(name))
            return
        if isinstance(data, bytes):
            self._remember(value, data)
        if run.mode is Mode.GENERATE:
            key: Key = (run.next_index,)
            run.next_index += 1
            self.recorder.iteration(name, run.resolution.signature, key[0], key, value)
        else:
            c = self.consumers[name]
            outer = self.keys.get(c.generator, [])
            prefix = outer[c.acked] if c.acked < len(outer) and c.acked < c.pushed else (
                len(outer),)
            key = (*prefix, c.yielded_in_push)
            c.yielded_in_push += 1
        self._new_iteration(name, key, value)

    def _pushed(self, name: str) -> None:
        c = self.consumers[name]
        keys = self.keys.get(c.generator, [])
        if c.acked < len(keys):
            self.bus.publish(ev.Push(task=name, iter=keys[c.acked]))
        c.acked += 1
        c.yielded_in_push = 0

    def _generator_finished(self, name: str, run: Launched, resolution: Resolution,
                            clean: bool) -> None:
        if not clean:
            return
        if run.mode is Mode.INNER_GENERATE:  # its signature is known only now
            for index, key in enumerate(self.keys.get(name, [])):
                self.recorder.iteration(name, resolution.signature, index, key,
                                        self.values[(name, key)])
        self.recorder.generator_complete(name, resolution.signature,
                                         len(self.keys.get(name, [])))

    def _final_consumer_resolution(self, c: Consumer, resolution: Resolution) -> Resolution:
        fixed = self._upstream_values(c.name, (), in_scope=False) or {}
        return self.resolver.resolve(c.name, fixed, (), c.sequence.hexdigest())

    # -- releasing finished iterations (bounded memory) ----------------------------------
    def _release_committed(self) -> None:
        """After a commit: drop what the driver holds for the iterations of a scope that
        every consumer has finished and whose units are all committed (their values, the
        units resolved, the resolver's per-unit state). A consumer that would push the
        scope again (deferred: replayed from the store, or not started) holds the whole
        scope; an inner generator's own iterations are kept (it records them at its end).
        What is asked for after that (a replan, a consumer restarted) is read back from
        the store (see `_read_back_value`)."""
        for gen, keys in self.keys.items():
            if gen not in self.needed or not self.readiness.releasable_scope(gen):
                continue
            upto = finished_by_consumers(
                len(keys), (c for c in self.consumers.values() if c.generator == gen))
            tasks = self._scope_tasks(gen)
            own = isinstance(keys, DenseKeys)  # an inner generator records its own at its end
            upto = self.readiness.releasable(gen, upto, tasks, own)
            dropped = self.readiness.release(gen, upto, tasks, own)
            by_task: dict[str, list[Key]] = {}
            for name, key, value in dropped:
                self.seen.discard((name, key))
                self.new_values.discard((name, key))
                self._fresh_bytes -= len(self._fresh.pop(value, b""))
                if name != gen:
                    by_task.setdefault(name, []).append(key)
            for name, released in by_task.items():
                self.resolver.release(name, released)

    def _scope_tasks(self, gen: str) -> list[str]:
        """The per-iteration tasks of a generator's scope (not nested in an inner one)."""
        inside = (*self.graph.scope.get(gen, ()), gen)
        return [t for t, scope in self.graph.scope.items()
                if scope == inside and t in self.needed and t not in self.consumers]

    def _read_back_value(self, name: str, key: Key) -> str | None:
        """A released value, asked for again: a generator's iteration from the stored
        iterations of its run, a unit's output from its stored state."""
        if name in self._gen_signatures and len(key) == 1:
            text = self.store.iteration(name, self._gen_signatures[name], key[0])
            return None if text is None else decode_iteration(text)[1]
        state = self.store.unit_state(name, key)
        return None if state is None else state.output
