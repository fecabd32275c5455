"""What the browser tests share: Debian's Chromium, its flags, and the chat's admin password and push token.

Playwright's own browser download is not used: ``CHAT_TEST_CHROMIUM``
(default ``/usr/bin/chromium``) is launched headless.
"""

from __future__ import annotations

import os
import secrets

CHROMIUM = os.environ.get("CHAT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)
API_TOKEN = "api-" + secrets.token_hex(16)
