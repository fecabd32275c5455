"""Accounts in a real Chromium: register, sign in on a second browser, own the name, sign out everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.support.gunicorn import ChatServer
from tests.support.names import fresh_nick, fresh_room
from tests.support.pages import WAIT_MS, message, say, wait_joined

NewPage = Callable[[], Page]
PASSWORD = "a password of my own"


def account_form(page: Page, chat: ChatServer, name: str, password: str, button: str) -> None:
    page.goto(chat.http + "/", timeout=WAIT_MS)
    page.fill("#account-name-input", name)
    page.fill("#account-password", password)
    page.click(button)


def join_room(page: Page, room: str, nick: str) -> None:
    page.fill("#room", room)
    page.click("#join-button")
    page.wait_for_url(re.compile(r"/chat\?room="), timeout=WAIT_MS)
    wait_joined(page, nick)


def test_register_then_sign_in_on_a_second_browser_chat_as_one_name_and_sign_out_everywhere(
    chat: ChatServer, new_page: NewPage
) -> None:
    name, room = fresh_nick("owner"), fresh_room()
    laptop = new_page()
    account_form(laptop, chat, name, PASSWORD, "#register-button")
    expect(laptop.locator("#account-name")).to_have_text(name, timeout=WAIT_MS)
    expect(laptop.locator("#nick")).to_have_value(name)
    join_room(laptop, room, name)
    say(laptop, "from the laptop")

    phone = new_page()
    account_form(phone, chat, name, "not my password", "#sign-in-button")
    expect(phone.locator("#account-error")).to_have_text(re.compile("wrong name or password"), timeout=WAIT_MS)
    account_form(phone, chat, name.upper(), PASSWORD, "#sign-in-button")  # names have no case
    expect(phone.locator("#account-name")).to_have_text(name, timeout=WAIT_MS)
    join_room(phone, room, name)
    expect(message(phone, "from the laptop")).to_have_count(1, timeout=WAIT_MS)
    say(phone, "from the phone")
    expect(message(laptop, "from the phone")).to_have_count(1, timeout=WAIT_MS)

    guest = new_page()
    guest.goto(chat.http + "/", timeout=WAIT_MS)
    guest.fill("#nick", name)
    guest.fill("#room", room)
    guest.click("#join-button")
    expect(guest.locator("#form-error")).to_have_text(re.compile("registered"), timeout=WAIT_MS)

    phone.goto(chat.http + "/", timeout=WAIT_MS)
    phone.click("#sign-out-everywhere")
    expect(phone.locator("#account-form")).to_be_visible(timeout=WAIT_MS)
    expect(laptop.locator("#conn-state")).to_have_attribute("data-state", "disconnected", timeout=WAIT_MS)
    expect(laptop.locator("#notice")).to_have_text(re.compile("signed out everywhere"), timeout=WAIT_MS)
    laptop.goto(chat.http + "/", timeout=WAIT_MS)
    expect(laptop.locator("#account-form")).to_be_visible(timeout=WAIT_MS)  # its cookie is void too
