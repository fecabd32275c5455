// The landing page: pick a nick (POST /api/session sets the session cookie),
// see the rooms (GET /api/rooms), join one: then /chat?room=<name>.
//
// Element hooks: #join-form, #nick, #room, #join-button, #form-error,
// #rooms (li[data-room] > button), #rooms-status.
// Text from the server is only ever set with textContent. The checks are chat.js's.

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
  for (const { name, members } of rooms) {
    if (!ROOM_NAME.test(name)) continue;
    const item = document.createElement("li");
    item.dataset.room = name;
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "room-pick";
    const label = document.createElement("span");
    label.className = "room-name";
    label.textContent = name;
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
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ nick }),
      credentials: "same-origin",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      showError(body.message || `The server refused (HTTP ${response.status}).`);
      nickInput.focus();
      return;
    }
    addStoredRoom(room);
    window.location.assign(`/chat?room=${encodeURIComponent(room)}`);
  } catch {
    showError("Could not reach the server. Try again in a moment.");
  } finally {
    button.disabled = false;
  }
});

loadRooms();
