"""A unit queued behind another on the same worker, to start the moment that one ends, if the
output it just wrote means the queued unit must run (`watchrun build` only; the driver picks
the unit: Plan.follower).

A chain of short tasks otherwise pays, at every step, for a round trip through the driver:
the leader's result is read, recorded, the next unit resolved and its job sent while the worker
waits. Here the worker goes on at once and the driver does the same work meanwhile.

Whether the follower runs depends on what its leader wrote, so it is decided where that is known
first, by the worker, and again by the executor when the leader's DONE arrives, with this one
function over the same data (the leader's label, its end, the DONE frame's output hashes):
both always agree. The follower runs iff the leader ended DONE and the follower's signature,
made from the leader's output hashes as the resolver makes it (state/signing.py), has no stored
result: exactly when the driver would find it dirty. Otherwise nothing of it runs and the driver
resolves it as usual (an early cut-off, a result stored for that signature).
"""

from __future__ import annotations

from watchrun.state.signing import static_identity, unit_signature

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from watchrun.executors.worker_outputs import OutputHash


class Follow:
    """What decides whether a queued unit runs after its leader: plain values, as frames carry."""

    __slots__ = ("inputs", "known", "leader", "prefix", "read", "upstream")

    def __init__(self, leader: str, prefix: str, inputs: dict[str, str], read: dict[str, str],
                 upstream: dict[str, str], known: frozenset[str]) -> None:
        self.leader = leader  # the leader's label, as its JOB frame gives it
        self.prefix = prefix  # the follower's task prefix (code, params, kind, `after`)
        self.inputs = inputs  # its other inputs' hashes, by path as its header gives it
        self.read = read  # its inputs the leader writes: path as given -> absolute path
        self.upstream = upstream  # its upstream values: argument -> value hash
        self.known = known  # its signatures with a stored result (and, if forced, none)

    def fields(self) -> tuple[object, ...]:
        return (self.leader, self.prefix, self.inputs, self.read, self.upstream, self.known)


def runs(follow: Follow, leader: str, done: bool, claims: Sequence[OutputHash]) -> bool:
    """Whether the follower runs, now that `leader` ended (`done`: with DONE, `claims`: the
    output hashes of its DONE frame)."""
    if not done or leader != follow.leader:
        return False
    inputs = dict(follow.inputs)
    claimed = {claim[0]: claim[5] for claim in claims}
    for given, path in follow.read.items():
        digest = claimed.get(path)
        if digest is None:  # not hashed by the worker: the driver looks at it itself
            return False
        inputs[given] = digest
    return unit_signature(static_identity(follow.prefix, inputs), follow.upstream) \
        not in follow.known
