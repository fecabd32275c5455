"""Signed in, in a real Chromium: a direct message, an edit, a delete, a reaction, a private room, a mute.

Two people with accounts, each in their own browser context (bob signs in
again on a second one); every check is on what they see. The prompts and
confirmations the page opens are answered by :class:`Dialogs`. The hooks used
are listed at the top of ``static/chat.js`` and ``static/message-view.js``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Dialog, Locator, Page, expect

from tests.support.gunicorn import ChatServer
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, message, say, wait_joined

NewPage = Callable[[], Page]
PASSWORD = "correct horse battery"


class Dialogs:
    """Answers the page's prompts in order (``then``); confirmations are accepted. Asked: ``questions``."""

    def __init__(self, page: Page) -> None:
        self.answers: list[str] = []
        self.questions: list[str] = []
        page.on("dialog", self.answer)

    def then(self, *answers: str) -> Dialogs:
        self.answers.extend(answers)
        return self

    def answer(self, dialog: Dialog) -> None:
        self.questions.append(dialog.message)
        if dialog.type == "prompt":
            dialog.accept(self.answers.pop(0))
        else:
            dialog.accept()


def account(page: Page, chat: ChatServer, name: str, button: str) -> None:
    """Register (``#register-button``) or sign in (``#sign-in-button``) as ``name`` on the landing page."""
    page.goto(chat.http + "/", timeout=WAIT_MS)
    page.fill("#account-name-input", name)
    page.fill("#account-password", PASSWORD)
    page.click(button)
    expect(page.locator("#account-name")).to_have_text(name, timeout=WAIT_MS)


def open_chat(page: Page, name: str, room: str) -> None:
    page.fill("#room", room)
    page.click("#join-button")
    page.wait_for_url(re.compile(r"/chat\?room="), timeout=WAIT_MS)
    wait_joined(page, name)
    expect(page.locator("#account-actions")).to_be_visible(timeout=WAIT_MS)


def room_entry(page: Page, label: str) -> Locator:
    """The rooms list's entry shown as ``label`` (a private room's title, a DM's other person)."""
    return page.locator("#rooms-list li").filter(
        has=page.locator(".room-name", has_text=re.compile(f"^{re.escape(label)}$"))
    )


def line(page: Page, text: str) -> Locator:
    line = message(page, text)
    expect(line).to_have_count(1, timeout=WAIT_MS)
    return line


def test_a_direct_message_edited_deleted_reacted_to_then_a_private_room_and_a_mute(
    chat: ChatServer, new_page: NewPage
) -> None:
    alice, bob, lobby = fresh_nick("alice"), fresh_nick("bob"), fresh_room("lobby")
    a = new_page()
    account(a, chat, alice, "#register-button")
    open_chat(a, alice, lobby)
    a_asks = Dialogs(a)

    first_bob = new_page()
    account(first_bob, chat, bob, "#register-button")
    b = new_page()  # bob again, signed in on a second browser
    account(b, chat, bob, "#sign-in-button")
    open_chat(b, bob, lobby)

    # alice writes to bob: the conversation appears on both sides under the other's name
    a_asks.then(bob)
    a.click("#new-dm")
    expect(a.locator("#dm-compose")).to_contain_text(bob)
    a.fill("#composer textarea", "hello bob, privately")
    a.press("#composer textarea", "Enter")
    expect(a.locator("#room-title")).to_have_text(bob, timeout=WAIT_MS)
    expect(room_entry(a, bob)).to_have_class(re.compile(r"\bdm\b"))
    line(a, "hello bob, privately")

    dm = room_entry(b, alice)
    expect(dm).to_have_count(1, timeout=WAIT_MS)
    expect(dm.locator(".unread")).to_have_text("1", timeout=WAIT_MS)
    dm.locator("button").click()
    expect(b.locator("#room-title")).to_have_text(alice)
    line(b, "hello bob, privately")
    say(b, "hi alice")
    line(a, "hi alice")
    expect(line(b, "hi alice").locator("button.edit")).to_have_count(1)
    theirs = line(b, "hello bob, privately")
    expect(theirs.locator("button.edit")).to_have_count(0)
    expect(theirs.locator("button.delete")).to_be_hidden()  # not his, and he moderates nothing here

    # alice edits her message; bob sees the new text, marked
    mine = line(a, "hello bob, privately")
    mine.hover()
    mine.locator("button.edit").click()
    editor = mine.locator("textarea.edit-text")
    editor.fill("hello bob, edited")
    editor.press("Enter")
    edited = line(b, "hello bob, edited")
    expect(edited.locator(".edited")).to_have_text("(edited)")
    expect(message(b, "hello bob, privately")).to_have_count(0)

    # alice deletes another; bob sees that a message was deleted, not what it said
    say(a, "oops, not for you")
    line(b, "oops, not for you")
    oops = line(a, "oops, not for you")
    oops.hover()
    oops.locator("button.delete").click()
    expect(b.locator("#messages li.msg.deleted")).to_have_text(re.compile("message deleted"), timeout=WAIT_MS)
    expect(message(b, "oops, not for you")).to_have_count(0)
    assert a_asks.questions[-1].startswith("Delete this message")

    # bob reacts; alice sees the count and who
    edited.hover()
    edited.locator("button.react-add").click()
    edited.locator('button.pick[data-emoji="👍"]').click()
    expect(edited.locator("button.reaction.mine")).to_have_text("👍 1", timeout=WAIT_MS)
    reaction = line(a, "hello bob, edited").locator('button.reaction[data-emoji="👍"]')
    expect(reaction).to_have_text("👍 1", timeout=WAIT_MS)
    expect(reaction).to_have_attribute("title", bob)

    # alice makes a private room and invites bob: it appears in his list by its title
    a_asks.then("Plans")
    a.click("#new-private")
    expect(a.locator("#room-title")).to_have_text("Plans", timeout=WAIT_MS)
    wait_joined(a, alice)
    a_asks.then(bob)
    a.click("#invite")
    plans = room_entry(b, "Plans")
    expect(plans).to_have_class(re.compile(r"\bprivate\b"), timeout=WAIT_MS)
    plans.locator("button").click()
    wait_joined(b, bob)
    expect(b.locator("#mute")).to_be_hidden()
    expect(b.locator("#slow-mode")).to_be_hidden()

    # slow mode: shown in the header; a second message too soon is refused and kept in the box
    a_asks.then("30")
    a.click("#slow")
    expect(b.locator("#slow-mode")).to_have_text("slow mode: 30 s", timeout=WAIT_MS)
    say(b, "thanks for the invite")
    thanks = line(a, "thanks for the invite")
    thanks.hover()
    expect(thanks.locator("button.delete")).to_be_visible()  # the owner may delete anyone's
    b.fill("#composer textarea", "and again")
    b.press("#composer textarea", "Enter")
    expect(b.locator("#messages li.local-notice")).to_have_text(
        re.compile(r"^Slow mode: wait \d+ s\.$"), timeout=WAIT_MS
    )
    expect(b.locator("#composer textarea")).to_have_value("and again")
    a_asks.then("0")
    a.click("#slow")
    expect(b.locator("#slow-mode")).to_be_hidden(timeout=WAIT_MS)

    # alice mutes bob: he sees it said, and what he writes next is refused and kept in his box
    a_asks.then(bob, "10")
    a.click("#mute")
    expect(b.locator("#messages li.system").filter(has_text="muted")).to_have_count(1, timeout=WAIT_MS)
    b.fill("#composer textarea", "can I still talk?")
    b.press("#composer textarea", "Enter")
    expect(b.locator("#messages li.local-notice").last).to_have_text(
        "You are muted here for 10 more minutes.", timeout=WAIT_MS
    )
    expect(b.locator("#composer textarea")).to_have_value("can I still talk?")
    expect(message(b, "can I still talk?")).to_have_count(0)
    expect(message(a, "can I still talk?")).to_have_count(0)
    expect(message(a, "and again")).to_have_count(0)

    # bob's first browser, opening the chat now, finds both private rooms by itself
    open_chat(first_bob, bob, lobby)
    expect(room_entry(first_bob, "Plans")).to_have_count(1, timeout=WAIT_MS)
    expect(room_entry(first_bob, alice)).to_have_count(1, timeout=WAIT_MS)
    room_entry(first_bob, alice).locator("button").click()
    line(first_bob, "hello bob, edited")
    expect(first_bob.locator("#messages li.msg.deleted")).to_have_count(1)
