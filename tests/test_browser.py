"""A real browser (Debian chromium, headless, driven by playwright) chats with the demo.

Chromium comes from apt (`apt-get install -y chromium`, done by the Makefile's test set-up);
playwright must never download its own browser. A missing chromium is a FAILURE, not a skip.
Closing the tab ends the session: its folder of generated music is deleted (gradio's unload).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

import gradio_app
from app.loading import ModelChoice, load_model

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    engine = load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))
    app = gradio_app.build_app(engine, root=tmp_path_factory.mktemp("sessions"))
    gradio_app.launch(app, host="127.0.0.1", port=0, block=False, quiet=True)
    try:
        yield app
    finally:
        app.close()


def wait_until_idle(page) -> None:
    """Until the turn finished: the status line reports it."""
    expect(page.locator("#turn-status")).to_contain_text("Done", timeout=60_000)


def test_chat_in_a_real_browser(demo, tmp_path):
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} not found: install Debian chromium (apt-get install -y chromium); "
        "`make test` does this"
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(demo.local_url, timeout=30_000)
            expect(page.locator("#random-weights-notice")).to_contain_text("RANDOM weights",
                                                                             timeout=30_000)
            page.locator("#prompt textarea").fill("Describe a slow piano melody")
            page.locator("#send").click()
            user = page.locator('#chatbot [data-testid="user"]')
            expect(user).to_have_count(1, timeout=30_000)
            expect(user).to_contain_text("Describe a slow piano melody")
            bot = page.locator('#chatbot [data-testid="bot"]').first
            # The placeholder "…" is replaced by the streamed answer.
            expect(bot).to_have_text(re.compile(r"[^…\s]"), timeout=45_000)
            expect(page.locator("#prompt textarea")).to_have_value("")
            wait_until_idle(page)
            # A second turn asking for music: the player gets the generated WAV.
            page.get_by_label("always").check()
            page.locator("#prompt textarea").fill("Compose a fast guitar tune")
            page.locator("#send").click()
            expect(page.locator('#chatbot [data-testid="user"]')).to_have_count(2, timeout=30_000)
            expect(page.locator("#turn-status")).to_contain_text("music below", timeout=60_000)
            expect(page.locator("#music-download")).to_contain_text(".wav", timeout=10_000)
            assert "Traceback" not in page.content()
            shot = tmp_path / "demo-chat.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            (session,) = demo.chat_service.sessions.values()
            assert session.chat.last_music.is_file()
            page.close()  # the tab closes: its session ends without waiting for the TTL
            deadline = time.monotonic() + 30
            # the unload handler runs on a server thread: it drops the session, then deletes
            # its folder, so wait for both
            while ((demo.chat_service.sessions or session.chat.folder.exists())
                   and time.monotonic() < deadline):
                time.sleep(0.5)
            assert not demo.chat_service.sessions, "closing the tab did not end the session"
            assert session.closed and not session.chat.folder.exists()
        finally:
            browser.close()
