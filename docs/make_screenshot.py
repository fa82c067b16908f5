"""Make docs/tui.png, the README's picture of `watchrun dev`, from the real app.

    python docs/make_screenshot.py [--out docs/tui.png] [--svg docs/tui.svg]

It copies an example project (examples/generators, else examples/quickstart) to a temporary
folder, runs the real dev engine and the TUI there (headless, with Textual's Pilot), waits for
the first build, selects a task that inherits from a template, edits one of its params as a user
would, and saves the app's SVG screenshot while its units rerun (the header shows the change;
the detail pane the inheritance, the params with where they are set, and why it runs). The SVG
becomes a PNG with the first converter found: the `cairosvg` package (pip install cairosvg),
`rsvg-convert` (Debian: librsvg2-bin) or a headless Chromium; none is a dependency of watchrun.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from watchrun.session import open_session  # noqa: E402
from watchrun.commands.dev import build_dev_engine  # noqa: E402
from watchrun.engine import events as ev  # noqa: E402
from watchrun.engine.events import EventBus  # noqa: E402
from watchrun.ui.tui.app import WatchrunApp  # noqa: E402
from watchrun.ui.tui.records import Records  # noqa: E402

SIZE = (160, 45)  # columns, lines: from 120 columns the detail pane sits beside the DAG
SCALE = 2.0  # PNG pixels per SVG unit: sharp on high-density screens
MONO = "DejaVu Sans Mono"  # on this machine; Textual's SVG asks for Fira Code from the web


@dataclass(frozen=True)
class Scene:
    example: str
    edit: tuple[str, str, str] | None  # file, old text, new text: a change made after the build
    select: str  # the task shown in the detail pane
    done: int = 0  # show the moment when the selected task has this many units done (0: idle)


SCENES = [
    # a param of a per-iteration task changes: its 276 units rerun, the moment is mid-way
    Scene("generators", ("tasks/enrich/request.py", "slow_ms = 500", "slow_ms = 300"),
          "enrich.request", done=110),
    Scene("quickstart", ("tasks/clean/base.py", "# decimals = 2", "# decimals = 3"),
          "clean.sales"),
]


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the example did not reach the state to show")
        await asyncio.sleep(0.01)


async def shoot(root: Path, scene: Scene, size: tuple[int, int] = SIZE) -> str:
    """Run `watchrun dev` with the TUI on the project; return the SVG of the chosen moment."""
    with open_session(root, "watchrun dev", write=True) as session:
        bus = EventBus()
        events: list[ev.Event] = []
        bus.subscribe(events.append)
        engine = build_dev_engine(session, [], 2, bus)
        app = WatchrunApp(engine, records=Records(session.config.state_dir))
        bus.subscribe(app.inbox.put)
        async with app.run_test(size=size) as pilot:
            engine_task = asyncio.create_task(engine.run())
            try:
                await wait_for(lambda: any(isinstance(e, ev.Idle) for e in events))
                while app.dag.selected != scene.select:
                    await pilot.press("j")
                await pilot.pause(0.3)  # the log poll
                mark = len(events)
                if scene.edit is not None:
                    rel, old, new = scene.edit
                    path = root / rel
                    path.write_text(path.read_text().replace(old, new))

                def moment() -> bool:
                    """Idle after the change, or the selected task that far in its rerun."""
                    since = events[mark:]
                    change = next((i for i, e in enumerate(since) if isinstance(e, ev.Change)),
                                  None)
                    if change is None:
                        return False
                    if any(isinstance(e, ev.Idle) for e in since[change:]):
                        return True
                    app.flush()
                    progress = app.board.progress(scene.select)
                    return bool(scene.done and progress and progress.done >= scene.done)

                await wait_for(moment)
                if not scene.done:
                    await pilot.pause(0.5)  # the log poll and the last redraw
                app.flush()
                return app.export_screenshot(title="watchrun dev")
            finally:
                engine.quit()
                await engine_task


def with_local_font(svg: str) -> str:
    """Converters cannot fetch Textual's web font: use a monospace font installed here."""
    return re.sub(r'font-family: *"?Fira Code"?[^;]*;', f'font-family: "{MONO}", monospace;',
                  svg)


def to_png(svg_path: Path, png_path: Path) -> str:
    try:
        cairosvg = importlib.import_module("cairosvg")
    except ImportError:
        pass
    else:
        cairosvg.svg2png(url=str(svg_path), write_to=str(png_path), scale=SCALE)
        return "cairosvg"
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        subprocess.run([rsvg, "--zoom", str(SCALE), "-o", str(png_path), str(svg_path)],
                       check=True)
        return "rsvg-convert"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        browser = shutil.which(name)
        if browser:
            width, height = svg_size(svg_path.read_text())
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars",
                            f"--force-device-scale-factor={SCALE}",
                            f"--window-size={width},{height}",
                            f"--screenshot={png_path}", svg_path.as_uri()],
                           check=True, capture_output=True)
            return name
    raise SystemExit("no SVG converter: pip install cairosvg, or apt-get install librsvg2-bin")


def svg_size(svg: str) -> tuple[int, int]:
    match = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    if match is None:
        return 1200, 800
    return round(float(match.group(1))), round(float(match.group(2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "tui.png")
    parser.add_argument("--svg", type=Path, default=None, help="also keep the SVG here")
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}", help="COLUMNSxLINES")
    args = parser.parse_args()
    columns, lines = (int(n) for n in args.size.split("x"))
    scene = next(s for s in SCENES if (REPO / "examples" / s.example).is_dir())
    with tempfile.TemporaryDirectory(prefix="watchrun-shot-") as tmp:
        root = Path(tmp) / scene.example
        shutil.copytree(REPO / "examples" / scene.example, root,
                        ignore=shutil.ignore_patterns(".watchrun", "out", "__pycache__"))
        svg = with_local_font(asyncio.run(shoot(root, scene, (columns, lines))))
        svg_path = args.svg or Path(tmp) / "tui.svg"
        svg_path.write_text(svg)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        used = to_png(svg_path, args.out)
    print(f"{args.out} ({scene.example}, converted with {used})")


if __name__ == "__main__":
    main()
