"""Screenshots for the README: the chat page with two users chatting, and the admin page.

    python -m tests.browser.take_screenshots [--out docs/screenshots]

Starts a chat (gunicorn on ephemeral ports, a throw-away database), has
alice and bob register and chat in Debian's Chromium (``CHAT_TEST_CHROMIUM``):
a room, a direct conversation, a private room, an edit and reactions; writes
``chat.png``, then logs in to ``/admin`` with the admin password and writes
``admin.png``. An app without an admin page (404) gets no ``admin.png``. The
chat is stopped, by PID, before the command ends.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.gunicorn import ChatServer, launch_chat
from tests.support.processes import REPO_ROOT

WAIT_MS = 15_000
CONVERSATION = [
    ("alice", "Morning! Is the deploy still on for today?"),
    ("bob", "Yes, after lunch. The migration ran fine on staging."),
    ("alice", "Great. I'll keep an eye on the error rates.\nPing me if you need a hand."),
    ("bob", "Will do. Deploying at 14:00 then."),
]


PASSWORD = "screenshots only"


def enter(page: Page, chat: ChatServer, nick: str, room: str) -> None:
    """Register ``nick`` on the landing page, then open the chat in ``room``."""
    page.goto(chat.http + "/")
    page.fill("#account-name-input", nick)
    page.fill("#account-password", PASSWORD)
    page.click("#register-button")
    expect(page.locator("#account-name")).to_have_text(nick)
    page.fill("#room", room)
    page.click("#join-button")
    page.wait_for_url(re.compile(r"/chat\?room="))
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#members li", has_text=nick)).to_have_count(1)


def say(page: Page, text: str) -> None:
    count = page.locator("#messages li.msg").count()
    page.fill("#composer textarea", text)
    page.press("#composer textarea", "Enter")
    expect(page.locator("#messages li.msg")).to_have_count(count + 1)


def take(out: Path, chat: ChatServer, password: str) -> list[Path]:
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pages = {}
            for nick in ("alice", "bob"):
                context = browser.new_context(viewport={"width": 1100, "height": 640}, device_scale_factor=1)
                context.set_default_timeout(WAIT_MS)
                pages[nick] = context.new_page()
                enter(pages[nick], chat, nick, "general")
            alice = pages["alice"]
            alice.fill("#join-room", "deploys")
            alice.press("#join-room", "Enter")
            expect(alice.locator("#room-title")).to_have_text("deploys")
            expect(alice.locator("#conn-state")).to_have_attribute("data-state", "live")
            alice.locator('#rooms-list li[data-room="general"] button').click()
            for nick, text in CONVERSATION:
                say(pages[nick], text)
            expect(alice.locator("#messages li.msg")).to_have_count(len(CONVERSATION))
            bob = pages["bob"]
            first = bob.locator("#messages li.msg").first
            for emoji in ("👍", "🎉"):
                first.locator("button.react-add").click()
                bob.locator(f'button.pick[data-emoji="{emoji}"]').click()
            expect(alice.locator("#messages li.msg").first.locator("button.reaction")).to_have_count(2)
            bob.once("dialog", lambda dialog: dialog.accept("alice"))
            bob.click("#new-dm")
            say(bob, "Lunch at 12:30 before the deploy?")
            bob.once("dialog", lambda dialog: dialog.accept("Release plans"))
            bob.click("#new-private")
            # alice's rooms: with the conversation, without bob's private room
            expect(alice.locator("#rooms-list li")).to_have_count(3)
            expect(alice.locator("#rooms-list li.dm")).to_have_count(1)
            mine = alice.locator("#messages li.msg").nth(2)
            mine.locator("button.edit").click()
            mine.locator("textarea.edit-text").fill("Great. I'll keep an eye on the error rates and the queue.")
            mine.locator("textarea.edit-text").press("Enter")
            expect(mine.locator(".edited")).to_have_count(1)
            alice.fill("#composer textarea", "Sounds good, see you then")
            written.append(out / "chat.png")
            alice.screenshot(path=str(written[-1]))

            admin = browser.new_context(viewport={"width": 1100, "height": 640}).new_page()
            admin.set_default_timeout(WAIT_MS)
            response = admin.goto(chat.http + "/admin/login")
            if response is None or response.status == 404:
                print("no admin page (404): admin.png not written", file=sys.stderr)
            else:
                admin.fill("input[name=password]", password)
                admin.locator("form:has(input[name=password]) [type=submit]").click()
                admin.wait_for_load_state("networkidle")
                written.append(out / "admin.png")
                admin.screenshot(path=str(written[-1]))
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    password = "admin-" + secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="chat-screenshots-") as directory:
        chat = launch_chat(Path(directory), CHAT_ADMIN_PASSWORD=password)
        try:
            written = take(args.out, chat, password)
        finally:
            chat.stop()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
