"""Commands that change the state without running tasks: `clean`, `accept`."""

from __future__ import annotations

import time
from pathlib import Path

from watchrun.commands.common import error, guarded, print_project_errors, unknown_task_message
from watchrun.commands.outputs import declared_outputs, remove_outputs
from watchrun.engine.resolve import Resolver
from watchrun.project.model import Kind
from watchrun.session import EXIT_OK, EXIT_PROJECT, open_session
from watchrun.state.store import ResultRecord, UnitState, UnitStatus


def clean_command(root: Path, names: list[str], outputs: bool = False) -> int:
    def body() -> int:
        with open_session(root, "watchrun clean", write=True) as session:
            for name in names:
                if name not in session.project.tasks:
                    return error(unknown_task_message(name, session.project.tasks))
            paths = declared_outputs(session, names) if outputs else []
            count = session.store.forget(names or None)
            session.store.commit()
            what = ", ".join(names) if names else "all tasks"
            print(f"watchrun: forgot {count} stored unit(s) of {what}")
            if outputs:
                remove_outputs(session.project.config.root, paths)
            return EXIT_OK

    return guarded(False, body)


def accept_command(root: Path, names: list[str]) -> int:
    """Record the last output of each task under its current signature. Its upstreams must
    have stored outputs (accepting needs to know what the task would receive)."""

    def body() -> int:
        with open_session(root, "watchrun accept", write=True) as session:
            project, store = session.project, session.store
            if project.errors:
                print_project_errors(project.errors, project.config.root, False)
                return EXIT_PROJECT
            resolver = Resolver(project, store, session.hasher)
            for name in names:
                if name not in project.tasks:
                    return error(unknown_task_message(name, project.tasks))
                scope = project.graph.scope.get(name, ())
                if scope or project.tasks[name].kind is not Kind.TASK:
                    kind = project.tasks[name].kind
                    what = (f"is a {kind.value}" if kind is not Kind.TASK
                            else f"runs once per iteration of {scope[-1]!r}")
                    return error(f"cannot accept {name!r}: it {what}; accept takes tasks "
                                 "outside generator scopes that are neither generators nor "
                                 f"collectors (`watchrun build {name}` brings it up to date)")
                last = store.unit_state(name)
                if last is None or last.output is None:
                    return error(f"'{name}' has never produced an output; nothing to accept")
                upstream = {}
                for arg, up in project.graph.upstreams.get(name, {}).items():
                    state = store.unit_state(up)
                    if state is None or state.output is None:
                        return error(f"cannot accept '{name}': its upstream '{up}' has no "
                                     "stored output")
                    upstream[arg] = state.output
                resolution = resolver.resolve(name, upstream)
                outputs = {k: v for k, v in resolver.hash_outputs(project.tasks[name]).items()
                           if v is not None}
                store.record_result(ResultRecord(name, resolution.signature, last.output,
                                                 outputs, last.duration or 0.0, time.time()))
                manifest_id, blob = resolution.unit_manifest()
                store.put_manifest(manifest_id, blob)
                store.set_unit_state(UnitState(name, (), resolution.signature,
                                               UnitStatus.ACCEPTED, manifest_id, last.output,
                                               last.duration, None, time.time()))
                print(f"watchrun: accepted {name} as clean")
            store.commit()
            return EXIT_OK

    return guarded(False, body)
