"""Time to the first answer of `make demo` from a fresh clone, in a real browser (docs/DEMO.md).

    python benchmarks/bench_first_answer.py [--prompt TEXT] [--venv .venv] [--train]

Clones this repository into a temporary folder, links the given virtualenv into it and runs
`make setup` there (the "setup done" starting point, not timed), then starts `make demo` (or
`make demo TRAIN=1` with --train) and times, from that start: the page being served (the address
printed), the prompt sent from a headless Debian chromium driven by playwright, the first streamed
text and the finished answer. Prints one table and the answer.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def fresh_clone(venv: Path) -> Path:
    clone = Path(tempfile.mkdtemp(prefix="bench_first_answer-")) / "m2ugen"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(venv.resolve())
    subprocess.run(["make", "setup"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
    return clone


def wait_for_address(proc: subprocess.Popen, timeout: float) -> str:
    """The demo's address from `make demo`'s output; the rest of the output is drained."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            if match and not found:
                found.append(match.group(1))
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout) or not found:
        raise SystemExit(f"bench_first_answer: no address printed within {timeout:.0f} s")
    return found[0]


def ask_in_browser(url: str, prompt: str, start: float) -> dict[str, float | str]:
    from playwright.sync_api import expect, sync_playwright

    times: dict[str, float | str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=60_000)
            page.locator("#prompt textarea").fill(prompt)
            page.locator("#send").click()
            times["prompt sent"] = time.monotonic() - start
            bot = page.locator('#chatbot [data-testid="bot"]').first
            expect(bot).to_have_text(re.compile(r"[^…\s]"), timeout=600_000)
            times["first streamed text"] = time.monotonic() - start
            expect(page.locator("#turn-status")).to_contain_text(re.compile("Done|music below"),
                                                                 timeout=600_000)
            times["answer complete"] = time.monotonic() - start
            times["answer"] = bot.inner_text()
        finally:
            browser.close()
    return times


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", default="Now compose a fast piano piece in a high register.")
    p.add_argument("--venv", default=str(ROOT / ".venv"), help="an installed virtualenv to link")
    p.add_argument("--train", action="store_true", help="time `make demo TRAIN=1` instead")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the page")
    args = p.parse_args(argv)
    clone = fresh_clone(Path(args.venv))
    start = time.monotonic()
    cmd = ["make", "demo"] + (["TRAIN=1"] if args.train else [])
    proc = subprocess.Popen(cmd, cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        url = wait_for_address(proc, args.timeout)
        served = time.monotonic() - start
        times = ask_in_browser(url, args.prompt, start)
    finally:
        subprocess.run(["pkill", "-TERM", "-s", str(proc.pid)], check=False)
    print(f"{' '.join(cmd)} in a fresh clone ({clone}); seconds after it started:")
    print(f"  page served          {served:7.1f}")
    for name in ("prompt sent", "first streamed text", "answer complete"):
        print(f"  {name:20} {times[name]:7.1f}")
    print(f"answer: {times['answer']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
