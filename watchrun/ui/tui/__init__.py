"""The Textual TUI of `watchrun dev`: `WatchrunApp(control)`, fed through `app.inbox.put`.

Importing this package does not import Textual; `layout` (the lane layout) is pure Python and
can draw the DAG anywhere (e.g. `watchrun graph`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Inbox", "WatchrunApp"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from watchrun.ui.tui import app

        return getattr(app, name)
    raise AttributeError(name)
