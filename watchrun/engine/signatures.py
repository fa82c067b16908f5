"""Signatures of units of work, and their manifests (the parts a signature is made of).

A unit is a task, or a task at one iteration. Its signature is a blake3 hash over:
- the task's *static* manifest: the code closure, params after inheritance, kind, argument names
  and the content hashes of its tracked inputs;
- the hashes of its upstream values (and of its iteration's value).
The static manifest is stored (deduplicated by its hash) so that a later run can say which part
changed: that is `explain`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from watchrun.engine.reasons import Reason, ReasonKind
from watchrun.project.codemap import CodeClosure
from watchrun.project.model import Task
from watchrun.state.signing import static_identity
from watchrun.state.store import ResultRecord, UnitState, UnitStatus

SIGNATURE_VERSION = "1"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


class Manifest(NamedTuple):
    """The static part of a task's signature, with enough detail to explain a change."""

    code_digest: str  # the closure's digest: covers every part below and the externals
    code: dict[str, list[Any]]  # qualname -> [digest, file, line, owner]
    externals: dict[str, str]  # third-party module -> version
    params: dict[str, list[Any]]  # name -> [value, where it is set]
    kind: str
    args: list[str]  # the upstream argument names, sorted
    inputs: dict[str, str | None]  # path (as matched) -> content hash

    @classmethod
    def build(cls, task: Task, closure: CodeClosure, inputs: dict[str, str | None],
              root: Path) -> Manifest:
        return cls(
            code_digest=closure.digest,
            code={p.qualname: [p.digest, p.file, p.line, p.owner] for p in closure.parts},
            externals=dict(closure.externals),
            params={k: [p.value, p.origin.format(root)] for k, p in sorted(task.params.items())},
            kind=task.kind.value,
            args=sorted(task.after),
            inputs=inputs,
        )

    def identity(self) -> str:
        """The hash of everything that affects results (not where things are written)."""
        prefix = task_prefix(self.code_digest, {k: v[0] for k, v in self.params.items()},
                             self.kind, self.args)
        return static_identity(prefix, self.inputs)

    def to_bytes(self) -> bytes:
        return canonical_json(self._asdict()).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        return cls(**json.loads(data))


def task_prefix(code_digest: str, params: dict[str, Any], kind: str, args: list[str]) -> str:
    """The part of a task's identity that does not depend on its inputs' contents (computed
    once per task and build)."""
    return canonical_json(["v" + SIGNATURE_VERSION, code_digest, params, kind, args])


def explain(
    current: Manifest,
    upstream: dict[str, str],
    last: UnitState | None,
    last_manifest: Manifest | None,
    last_upstream: dict[str, str] | None,
    result: ResultRecord | None,
    outputs_now: dict[str, str | None],
    forced: bool = False,
    last_result: ResultRecord | None = None,
) -> list[Reason]:
    """Why this unit must run, or [] when it is clean. The one place that decides.
    `last_result`: the result of its last run, when that run had another signature."""
    reasons: list[Reason] = []
    if forced:
        reasons.append(Reason(ReasonKind.FORCED))
    if result is not None:
        reasons.extend(_output_reasons(result, outputs_now, last_result))
        if last_manifest is not None and any(
                r.kind is ReasonKind.OUTPUT_OF_LAST_RUN for r in reasons):
            reasons.extend(diff_manifests(last_manifest, current))  # what that run differed in
        return reasons
    if last is None:
        return [*reasons, Reason(ReasonKind.NEVER_RUN)]
    if last.status is UnitStatus.FAILED:
        reasons.append(Reason(ReasonKind.LAST_FAILED))
    elif last.status is UnitStatus.CANCELLED:
        reasons.append(Reason(ReasonKind.LAST_CANCELLED))
    elif last.status is UnitStatus.STALE:
        reasons.append(Reason(ReasonKind.STALE))
    if last_manifest is not None:
        reasons.extend(diff_manifests(last_manifest, current))
        if last_upstream is not None:
            reasons.extend(_upstream_reasons(last_upstream, upstream))
    if not reasons or all(r.kind is ReasonKind.FORCED for r in reasons):
        # same manifest, no stored result: the upstream values or iteration value differ
        reasons.append(Reason(ReasonKind.UPSTREAM_CHANGED))
    return reasons


def _output_reasons(result: ResultRecord, outputs_now: dict[str, str | None],
                    last_result: ResultRecord | None) -> list[Reason]:
    """An output that differs from the result's is modified, but where it is what the unit's
    last run wrote under another signature (other params, say): then watchrun wrote it."""
    reasons = [] if result.stored else [Reason(ReasonKind.STORED_MISSING)]
    written = last_result.outputs if last_result is not None else {}
    for path, digest in sorted(result.outputs.items()):
        now = outputs_now.get(path)
        if now is None:
            reasons.append(Reason(ReasonKind.OUTPUT_MISSING, path))
        elif now != digest:
            kind = ReasonKind.OUTPUT_OF_LAST_RUN if written.get(path) == now \
                else ReasonKind.OUTPUT_MODIFIED
            reasons.append(Reason(kind, path))
    return reasons


def _upstream_reasons(old: dict[str, str], new: dict[str, str]) -> list[Reason]:
    return [
        Reason(ReasonKind.UPSTREAM_CHANGED, name)
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def diff_manifests(old: Manifest, new: Manifest) -> list[Reason]:
    reasons = _code_reasons(old, new) + _param_reasons(old, new)
    if old.kind != new.kind:
        reasons.append(Reason(ReasonKind.KIND_CHANGED, "", f"{old.kind} -> {new.kind}"))
    if old.args != new.args:
        reasons.append(Reason(ReasonKind.ARGS_CHANGED, "", f"{old.args} -> {new.args}"))
    return reasons + _input_reasons(old.inputs, new.inputs)


def _code_reasons(old: Manifest, new: Manifest) -> list[Reason]:
    reasons: list[Reason] = []
    for name in sorted(set(old.code) | set(new.code)):
        before, after = old.code.get(name), new.code.get(name)
        if before is not None and after is not None and before[0] == after[0]:
            continue
        part = after or before
        assert part is not None
        kind = (ReasonKind.CODE_ADDED if before is None else
                ReasonKind.CODE_REMOVED if after is None else ReasonKind.CODE_CHANGED)
        reasons.append(Reason(kind, name, f"from {part[3]}", f"{part[1]}:{part[2]}"))
    for mod in sorted(set(old.externals) | set(new.externals)):
        was, now = old.externals.get(mod), new.externals.get(mod)
        if was == now:
            continue
        if now is None:  # the code no longer imports it: not a version change
            reasons.append(Reason(ReasonKind.IMPORT_REMOVED, mod, f"(was {was})"))
        elif was is None:
            reasons.append(Reason(ReasonKind.IMPORT_ADDED, mod, f"({now})"))
        else:
            reasons.append(Reason(ReasonKind.EXTERNAL_CHANGED, mod, f"{was} -> {now}"))
    return reasons


def _param_reasons(old: Manifest, new: Manifest) -> list[Reason]:
    reasons = []
    for name in sorted(set(old.params) | set(new.params)):
        before, after = old.params.get(name), new.params.get(name)
        # compared as the signature sees them: 0.0 == 0 in Python, not in the signature
        if before is not None and after is not None and \
                canonical_json(before[0]) == canonical_json(after[0]):
            continue
        old_v = canonical_json(before[0]) if before else "(unset)"
        new_v = canonical_json(after[0]) if after else "(unset)"
        where = (after or before or ["", ""])[1]
        reasons.append(Reason(ReasonKind.PARAM_CHANGED, name, f"{old_v} -> {new_v}", where))
    return reasons


def _input_reasons(old: dict[str, str | None], new: dict[str, str | None]) -> list[Reason]:
    reasons = []
    for path in sorted(set(old) | set(new)):
        if path not in old:
            reasons.append(Reason(ReasonKind.INPUT_ADDED, path))
        elif path not in new:
            reasons.append(Reason(ReasonKind.INPUT_REMOVED, path))
        elif old[path] != new[path]:
            reasons.append(Reason(ReasonKind.INPUT_CHANGED, path))
    return reasons
