"""How a unit's signature is hashed from its parts: the one definition, shared by the driver's
resolver (engine/resolve.py) and by a worker deciding whether a unit queued behind the one it
just ran must run (executors/follow.py). A worker imports this module: no typing, no pathlib."""

from __future__ import annotations

from blake3 import blake3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def static_identity(prefix: str, inputs: Mapping[str, str | None]) -> str:
    """The task-level part: its prefix (code, params, kind, `after`) and its inputs' hashes."""
    h = blake3(prefix.encode())
    for path in sorted(inputs):
        # surrogatepass: a file name that is not UTF-8 (os.listdir gives it lone surrogates)
        # hashes like any other; valid text encodes as before
        h.update(f"\0{path}={inputs[path]}".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def unit_signature(static: str, upstream: dict[str, str], value: str | None = None) -> str:
    """static: Manifest.identity(); upstream: arg name -> output hash; value: iteration value."""
    h = blake3(static.encode())
    for name in sorted(upstream):
        h.update(f"\0{name}={upstream[name]}".encode())
    if value is not None:
        h.update(f"\0value={value}".encode())
    return h.hexdigest()
