"""The recent runs of a task, for the history screen (`h`): this session's runs from its events
(with why each ran), then earlier ones from the store (the store does not keep why)."""

from __future__ import annotations

import time

from textual.content import Content

from watchrun.ui.tui.dag import format_duration
from watchrun.ui.tui.detail import ago
from watchrun.ui.tui.records import RECENT, PastRun, Records
from watchrun.ui.tui.state import Board

TONE = {"ok": "$text-success", "clean": "$text-success", "failed": "$text-error",
        "cancelled": "$text-warning", "stale": "$text-warning"}
SAME_RUN = 2.0  # seconds: a stored run that ended this close to a session run is that run


def recent_runs(name: str, board: Board, records: Records) -> list[tuple[PastRun, bool]]:
    """(run, seen in this session), newest first."""
    session = list(board.rows[name].runs)
    stored = [run for run in records.runs(name)
              if not any(abs(run.finished - mine.finished) < SAME_RUN for mine in session)]
    merged = [(run, True) for run in session] + [(run, False) for run in stored]
    merged.sort(key=lambda pair: pair[0].finished, reverse=True)
    return merged[:RECENT]


def history_text(name: str, board: Board, records: Records) -> Content:
    runs = recent_runs(name, board, records)
    now = board.clock()
    lines: list[str | tuple[str, str]] = [(f"Recent runs of {name}\n\n", "bold")]
    if not runs:
        lines.append("No run recorded yet (in this session or in the store).\n")
    else:
        lines.append((f"{'ended':<28} {'took':>7}  {'outcome':<12} why\n", "bold"))
    for run, in_session in runs:
        moment = time.strftime("%m-%d %H:%M:%S", time.localtime(run.finished))
        units = f" ×{run.units}" if run.units > 1 else ""
        outcome = run.outcome if run.outcome != "clean" else "ok"
        why = run.why or ("(why: not recorded)" if in_session else "(an earlier run)")
        lines += [f"{moment}  {ago(now - run.finished):<12} ",
                  f"{format_duration(run.duration) or '—':>7}  ",
                  (f"{outcome + units:<12}", TONE.get(outcome, "")), f" {why}\n"]
    lines.append(("\nescape, h or q closes", "dim"))
    return Content.assemble(*lines)
