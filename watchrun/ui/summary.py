"""The last line of a build: shared by the consoles and the null-build proof, which prints it
without loading them."""

from __future__ import annotations


def summary_line(ok: bool, verb: str, ran: int, clean: int, failed: int, cancelled: int,
                 note: str = "") -> str:
    status = "ok" if ok else "FAILED"
    return (f"watchrun: {status}: {verb} {ran}, clean {clean}, failed {failed}, "
            f"cancelled {cancelled}{note}")
