"""Make docs/web.png, the README's picture of `watchrun dev --web` in a browser.

    python docs/make_web_screenshot.py [--out docs/web.png]

It copies examples/generators to a temporary folder, starts the real `watchrun dev --web` there
on a free port, opens the page in headless Chromium (Debian's package, driven by Playwright:
`apt-get install chromium`, `pip install playwright`), waits until the page shows a task of the
first build to end, selects a task, edits one of its params and saves a screenshot of the page
while its units rerun. Everything it started is
stopped before it exits.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(page: Any, received: list[str], text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in "".join(received):
        if time.monotonic() > deadline:
            raise SystemExit(f"the page never showed {text!r}")
        page.wait_for_timeout(50)


def shoot(root: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen(
        [sys.executable, "-m", "watchrun", "-C", str(root), "dev", "--web", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("watchrun dev --web did not start")
            time.sleep(0.1)
        received: list[str] = []
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 1500, "height": 860})
            try:
                page = browser.new_page()
                page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), lambda r: r.abort())
                page.on("websocket", lambda ws: ws.on(
                    "framereceived", lambda data: received.append(ANSI.sub("", data.decode(
                        "utf-8", "replace") if isinstance(data, bytes) else data))))
                page.goto(f"http://127.0.0.1:{port}/")
                # the terminal measured its cells before its font loaded: measure again
                page.wait_for_timeout(500)
                page.set_viewport_size({"width": 1500, "height": 861})
                page.set_viewport_size({"width": 1500, "height": 860})
                wait_for(page, received, "watching")  # the first build is over
                page.locator(".xterm-helper-textarea").focus()
                for _ in range(2):
                    page.keyboard.press("j")
                # a param of a per-iteration task changes: its 276 units rerun
                request = root / "tasks" / "enrich" / "request.py"
                request.write_text(request.read_text().replace("slow_ms = 500", "slow_ms = 300"))
                received.clear()
                wait_for(page, received, "▶ enrich.request")
                page.wait_for_timeout(250)  # some iterations in
                page.screenshot(path=str(out))
                page.keyboard.press("q")
                page.wait_for_timeout(1500)
            finally:
                browser.close()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "web.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watchrun-web-shot-") as tmp:
        root = Path(tmp) / "generators"
        shutil.copytree(REPO / "examples" / "generators", root,
                        ignore=shutil.ignore_patterns(".watchrun", "out", "__pycache__"))
        shoot(root, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
