"""The last line of a build, shared by the consoles and by the null-build proof, which is handed
the line a null build prints and replays it without loading any of them."""

from __future__ import annotations


def summary_line(ok: bool, verb: str, ran: int, clean: int, failed: int, cancelled: int,
                 note: str = "") -> str:
    status = "ok" if ok else "FAILED"
    return (f"watchrun: {status}: {verb} {ran}, clean {clean}, failed {failed}, "
            f"cancelled {cancelled}{note}")
