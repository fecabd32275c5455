// The landing page: pick a nick (POST /api/session sets the session cookie),
// see the rooms (GET /api/rooms), join one: then /chat?room=<name>.
//
// Accounts: #account-form (#account-name-input, #account-password, #sign-in-button,
// #register-button) posts /api/login or /api/accounts and reloads the page signed
// in; #signed-in has #sign-out and #sign-out-everywhere. #account-error says why not.
//
// A busy server (503/429 with Retry-After) or none reachable: the session is asked for again
// after a jittered wait (static/backoff.js), saying so in #form-error, up to 6 attempts.
//
// Element hooks: #join-form, #nick, #room, #join-button, #form-error,
// #rooms (li[data-room] > button; li.private for your private rooms, shown by their title), #rooms-status.
// Text from the server is only ever set with textContent. The checks are chat.js's.

import { backoffDelay, retryAfterDelay } from "./backoff.js";
import { ROOM_NAME, addStoredRoom, nickProblem, roomProblem } from "./chat.js";

const form = document.getElementById("join-form");
const nickInput = document.getElementById("nick");
const roomInput = document.getElementById("room");
const button = document.getElementById("join-button");
const errorBox = document.getElementById("form-error");
const roomsList = document.getElementById("rooms");
const roomsStatus = document.getElementById("rooms-status");
const roomNames = document.getElementById("room-names");

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = !text;
}

async function loadRooms() {
  let rooms;
  try {
    const response = await fetch("/api/rooms", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    rooms = (await response.json()).rooms;
  } catch {
    roomsStatus.textContent = "Could not load the rooms.";
    return;
  }
  roomsList.replaceChildren();
  roomNames.replaceChildren();
  for (const { name, members, title, private: hidden } of rooms) {
    if (!ROOM_NAME.test(name)) continue;
    const secret = hidden === true || name.startsWith("p.") || name.startsWith("dm.");
    const item = document.createElement("li");
    item.dataset.room = name;
    if (secret) item.className = "private";
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "room-pick";
    const label = document.createElement("span");
    label.className = "room-name";
    label.textContent = secret ? title || (name.startsWith("dm.") ? "direct message" : "private room") : name;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = members === 1 ? "1 member" : `${members} members`;
    pick.append(label, count);
    pick.addEventListener("click", () => {
      roomInput.value = name;
      form.requestSubmit();
    });
    item.append(pick);
    roomsList.append(item);
    if (secret) continue; // its opaque name means nothing to type
    const option = document.createElement("option");
    option.value = name;
    roomNames.append(option);
  }
  roomsStatus.textContent = rooms.length ? "" : "No rooms yet: name one above to create it.";
  roomsStatus.hidden = rooms.length > 0;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const nick = nickInput.value;
  const room = roomInput.value.trim();
  const problem = nickProblem(nick) || roomProblem(room);
  if (problem) {
    showError(problem);
    (nickProblem(nick) ? nickInput : roomInput).focus();
    return;
  }
  showError("");
  button.disabled = true;
  try {
    const outcome = await startSession(nick);
    if (outcome.ok) {
      addStoredRoom(room);
      window.location.assign(`/chat?room=${encodeURIComponent(room)}`);
      return;
    }
    showError(outcome.message);
    nickInput.focus();
  } finally {
    button.disabled = false;
  }
});

/** Attempts at a session before giving up and saying so (about a minute of backoff). */
const SESSION_ATTEMPTS = 6;

/**
 * POST /api/session, again after a jittered wait when the server is busy (503, 429 with
 * Retry-After) or cannot be reached (static/backoff.js): after a restart every open page asks
 * at once, and a refusal for now is not an answer to show. ``{ok}``, or ``{ok: false, message}``.
 */
async function startSession(nick) {
  for (let attempt = 0; ; attempt += 1) {
    let wait;
    try {
      const response = await fetch("/api/session", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ nick }),
        credentials: "same-origin",
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok) return { ok: true };
      wait = retryAfterDelay(response);
      if (wait === null) return { ok: false, message: body.message || `The server refused (HTTP ${response.status}).` };
    } catch {
      wait = backoffDelay(attempt);
    }
    if (attempt + 1 >= SESSION_ATTEMPTS) {
      return { ok: false, message: "Could not reach the server. Try again in a moment." };
    }
    showError(`The server is busy; trying again in ${Math.ceil(wait / 1000)} s…`);
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  return { response, body: await response.json().catch(() => ({})) };
}

const accountForm = document.getElementById("account-form");
const accountError = document.getElementById("account-error");

function showAccountError(text) {
  accountError.textContent = text;
  accountError.hidden = !text;
}

if (accountForm) {
  accountForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = event.submitter?.value === "register" ? "register" : "login";
    const name = document.getElementById("account-name-input").value;
    const password = document.getElementById("account-password").value;
    const problem = nickProblem(name) || (password.length < 8 ? "Passwords are at least 8 characters." : "");
    if (problem) {
      showAccountError(problem);
      return;
    }
    for (const button of accountForm.querySelectorAll("button")) button.disabled = true;
    try {
      const { response, body } = await postJson(action === "register" ? "/api/accounts" : "/api/login", {
        name,
        password,
      });
      if (!response.ok) {
        const wait = response.headers.get("Retry-After");
        showAccountError((body.message || `The server refused (HTTP ${response.status}).`) + (wait ? ` Try again in ${wait} s.` : ""));
        return;
      }
      window.location.reload();
    } catch {
      showAccountError("Could not reach the server. Try again in a moment.");
    } finally {
      for (const button of accountForm.querySelectorAll("button")) button.disabled = false;
    }
  });
}

for (const [id, url] of [
  ["sign-out", "/api/logout"],
  ["sign-out-everywhere", "/api/logout-everywhere"],
]) {
  const button = document.getElementById(id);
  if (!button) continue;
  button.addEventListener("click", async () => {
    try {
      const { response, body } = await postJson(url, {});
      if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
      window.location.reload();
    } catch (error) {
      showAccountError(`Could not sign out: ${error.message}`);
    }
  });
}

loadRooms();
