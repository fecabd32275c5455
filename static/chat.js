// The chat page's client: one WebSocket (docs/protocol.md), many rooms.
//
// Element hooks (tests and other pages rely on them):
//   #chat-app             data-nick, data-room, data-ws-origin, data-max-text
//   #conn-state           data-state = connecting | live | reconnecting | disconnected
//   #notice               why the page stopped for good ("You were disconnected by an admin: <reason>")
//   #banner               system messages for everyone while no room is joined
//   #rooms-list li[data-room]   joined rooms; .active the shown one; .unread its unread count
//   #join-room-form, #join-room   join another room
//   #room-title, #leave-room      the shown room and the button that leaves it
//   #messages             the shown room's log: li.msg[data-id][data-from] (.from, time, .text),
//                         li.system for system messages; li.msg.mention: a message naming you (@nick)
//   #typing               who else is typing in the shown room
//   #search-form (#search), #search-status, #search-results li.result[data-room][data-id]
//                         (.room, .from, .text): GET /api/search, best match first
//   .unread.mention[data-mentions]  a room's unread badge, when some of them name you
//   #members li[data-nick]        the shown room's members; #member-count
//   #composer textarea (#composer-text), #send   Enter sends, Shift+Enter is a new line
//   #errors .error-toast  error events, shown for a few seconds (.info: a notice, not an error)
//
// Owned and private rooms, direct messages, edits and moderation (docs/protocol.md §3.1-3.3):
//   #rooms-list li.private / li.dm   a private room shows its title, a direct conversation
//                         "@ the other person" (never the opaque p.… / dm.… name)
//   #account-actions      for accounts only (GET /api/me): #new-room (a public room you own),
//                         #new-private (prompt a title, create, join), #new-dm (prompt a name:
//                         the composer then writes to that person, #dm-cancel stops)
//   #room-tools           in the room header, for its owner and moderators: #invite and #remove
//                         (private rooms), #mute, #slow, and #moderator (the owner);
//                         #slow-mode "slow mode: N s" for everyone while it is on
//   li.msg lines: see static/message-view.js (button.edit, button.delete, button.react-add,
//                         button.pick, button.reaction, .edited, li.msg.deleted); an `update`
//                         replaces the line of its message in place
//   li.local-notice       in a room's log: why something was refused there ("You are muted here
//                         for 9 more minutes", "Slow mode: wait 7 s"); the unsent text stays in
//                         the composer
//
// Reconnecting: after a close 1012 (the server restarts, docs/protocol.md §5), once the
// server's retry hint ("restarting retry=MS") has passed, plus up to 10 % more at random;
// otherwise exponential backoff with full jitter, capped at 30 s. Before each attempt a fresh
// ws_url from POST /api/session (same nick, the cookie keeps the session);
// every room is joined again with since = the last id seen in it (and the
// epoch that id belongs to), and messages are deduplicated by id per room.
// An `update` (an edit, a delete, a reaction) takes an id of the room's sequence too: it counts
// for since like a message. Private rooms the `rooms` list names are joined like remembered ones.
// Messages sent but not seen back before the drop are sent again with the
// same ref: the server stores a retry once (docs/protocol.md §3).
// When the server's history restarted (a `reset` event, or a `joined` with
// reset), the room's ids start over: the old lines stay, above a notice,
// li.system.history-reset, and are no longer matched by id. Close codes 4001 (kicked),
// 4002 (signed out everywhere) and 4003 (banned) end it: no reconnect.
//
// User data is only ever put in the page with textContent and createElement.
//
// This module also exports the checks and the room list the landing page shares.

import { backoffDelay, retryAfterDelay } from "./backoff.js";
import { closeEditor, element, openEditor, reacted, renderMessage, togglePicker } from "./message-view.js";

/** Room names as the server checks them: ^[\w.-]{1,64}$ (Python's Unicode \w). */
export const ROOM_NAME = /^[\p{L}\p{N}_.-]{1,64}$/u;

const MAX_NICK = 32;
const NOT_PRINTABLE = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;
const STORAGE_KEY = "chat.rooms";
const DISMISSED_KEY = "chat.dismissed"; // private rooms this tab left: not joined again by itself

/** Why ``nick`` would be refused (docs/protocol.md §1), or "" if it is fine. */
export function nickProblem(nick) {
  if (!nick) return "Choose a nickname.";
  if ([...nick].length > MAX_NICK) return `A nickname is at most ${MAX_NICK} characters.`;
  if (nick !== nick.trim()) return "A nickname cannot start or end with a space.";
  if (NOT_PRINTABLE.test(nick)) return "A nickname cannot contain control or invisible characters.";
  return "";
}

/** Why ``room`` would be refused, or "" if it is fine. */
export function roomProblem(room) {
  if (!room) return "Name a room.";
  if (!ROOM_NAME.test(room)) return "Room names are 1-64 letters, digits, '_', '.' or '-'.";
  return "";
}

/** The rooms this tab has joined (sessionStorage: a reload joins them again). */
export function storedRooms() {
  try {
    const rooms = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(rooms) ? rooms.filter((r) => typeof r === "string" && ROOM_NAME.test(r)) : [];
  } catch {
    return [];
  }
}

function saveRooms(rooms) {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(rooms));
  } catch {
    // storage full or disabled: a reload then only knows the URL's room
  }
}

export function addStoredRoom(room) {
  const rooms = storedRooms();
  if (!rooms.includes(room)) saveRooms([...rooms, room]);
}

function removeStoredRoom(room) {
  saveRooms(storedRooms().filter((r) => r !== room));
}

function dismissed() {
  try {
    const rooms = JSON.parse(sessionStorage.getItem(DISMISSED_KEY) || "[]");
    return new Set(Array.isArray(rooms) ? rooms : []);
  } catch {
    return new Set();
  }
}

function setDismissed(room, on) {
  const rooms = dismissed();
  if (on) rooms.add(room);
  else rooms.delete(room);
  try {
    sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...rooms]));
  } catch {
    // storage full or disabled: the room is joined again on the next connection
  }
}

/** Whether ``name`` is a private room's (p.…) or a direct conversation's (dm.…) server-made name. */
function privateName(name) {
  return name.startsWith("p.") || name.startsWith("dm.");
}

/** "9 more minutes": how long a mute lasts still (seconds rounded up, larger units to the nearest). */
function duration(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  const plural = (n, unit) => `${n} more ${unit}${n === 1 ? "" : "s"}`;
  if (s < 60) return plural(s, "second");
  if (s < 2 * 3600) return plural(Math.round(s / 60), "minute");
  if (s < 2 * 86400) return plural(Math.round(s / 3600), "hour");
  return plural(Math.round(s / 86400), "day");
}

/** An entry of a `joined` history or an HTTP page that is an `update`, not a message. */
function isUpdate(entry) {
  return entry.type === "update" || (Number.isInteger(entry.target) && typeof entry.action === "string");
}

// -- the chat page ----------------------------------------------------------------------------

/** A restart (docs/protocol.md §5): come back after the hint in the reason, "restarting retry=MS". */
const SERVICE_RESTART = 1012;
const RETRY_HINT = /(?:^| )retry=(\d+)(?: |$)/;
/** At most this much of the hint is added at random, so that clients given one hint still spread. */
const HINT_JITTER = 0.1;
const ADMIN_CLOSE_CODES = new Set([4001, 4003]);
const SIGNED_OUT = 4002;
const STATE_LABELS = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  disconnected: "disconnected",
};
const ERROR_TOAST_MS = 6000;
const NEAR_BOTTOM_PX = 80;
/** At most this many commands (edit, mute, …) are remembered to route their errors to a room. */
const MAX_COMMANDS = 200;

/** Milliseconds between two "typing" sent for one room, and how long one is shown. */
const TYPING_EVERY_MS = 2500;
const TYPING_SHOWN_MS = 5000;

/** Whether ``text`` mentions ``nick``: "@nick", not inside a longer word, any case. */
export function mentions(text, nick) {
  if (!nick) return false;
  const escaped = nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@${escaped}(?![\\p{L}\\p{N}_])`, "iu").test(text);
}

/** One joined room: its log element, the ids seen, its members and unread count. */
class Room {
  constructor(name) {
    this.name = name;
    this.log = element("ol", "log");
    this.log.dataset.room = name;
    this.seen = new Set();
    this.lastId = null; // the highest message id seen
    this.epoch = null; // the epoch those ids belong to (docs/protocol.md §4.1)
    this.joinedOnce = false; // a join succeeded: rejoins ask for since = lastId
    this.joined = false; // joined on the current connection
    this.members = new Set();
    this.unread = 0;
    this.mentioned = 0; // unread messages that mention you
    this.typing = new Map(); // nick -> until when (ms) it is shown as typing
    this.typingSent = 0; // when this tab last said it is typing here
    this.item = null; // its entry in #rooms-list
    this.info = null; // the latest `room` event: owner, moderators, title, dm, slow, …
    this.hint = {}; // {title, private, dm}: what `rooms` or `invited` said before any `room` event
    this.invited = false; // added by an invitation: its first history counts as unread
  }
}

class ChatApp {
  constructor(root) {
    this.root = root;
    this.nick = root.dataset.nick;
    this.maxText = Number(root.dataset.maxText) || 4000;
    this.sessionUrl = root.dataset.sessionUrl || "/api/session";
    this.rooms = new Map();
    this.active = null;
    this.ws = null;
    this.live = false;
    this.everLive = false;
    this.stopped = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.refs = 0;
    this.pendingJoins = new Map(); // ref -> room name
    this.pendingSays = new Map(); // ref -> {room, text, conn}: not yet seen back; sent again after a reconnect
    this.commands = new Map(); // ref -> room name: edits, reactions, moderation (their errors show there)
    this.pendingCreates = new Set(); // refs of `create` sent: the `room` that answers is joined
    this.dmTo = null; // the composer writes to this person (a direct message), not to a room
    this.pendingDm = null; // {to, ref, text}: a `dm` sent, its room not known yet
    this.connections = 0; // `hello`s so far: a pending say is sent again only on a later connection
    this.account = false; // a signed-in account (GET /api/me): may create rooms and write DMs
    this.pageId = Math.random().toString(36).slice(2, 10); // refs unique across reloads (the server dedupes by ref)
    this.el = {
      state: document.getElementById("conn-state"),
      notice: document.getElementById("notice"),
      banner: document.getElementById("banner"),
      roomsList: document.getElementById("rooms-list"),
      joinForm: document.getElementById("join-room-form"),
      joinInput: document.getElementById("join-room"),
      knownRooms: document.getElementById("known-rooms"),
      title: document.getElementById("room-title"),
      leave: document.getElementById("leave-room"),
      messages: document.getElementById("messages"),
      empty: document.getElementById("empty-state"),
      members: document.getElementById("members"),
      memberCount: document.getElementById("member-count"),
      composer: document.getElementById("composer"),
      text: document.getElementById("composer-text"),
      send: document.getElementById("send"),
      errors: document.getElementById("errors"),
      typing: document.getElementById("typing"),
      searchForm: document.getElementById("search-form"),
      search: document.getElementById("search"),
      searchStatus: document.getElementById("search-status"),
      searchResults: document.getElementById("search-results"),
      accountActions: document.getElementById("account-actions"),
      newRoom: document.getElementById("new-room"),
      newPrivate: document.getElementById("new-private"),
      newDm: document.getElementById("new-dm"),
      dmBar: document.getElementById("dm-compose"),
      dmTo: document.getElementById("dm-to"),
      dmCancel: document.getElementById("dm-cancel"),
      tools: document.getElementById("room-tools"),
      slowMode: document.getElementById("slow-mode"),
      invite: document.getElementById("invite"),
      remove: document.getElementById("remove"),
      mute: document.getElementById("mute"),
      slow: document.getElementById("slow"),
      moderator: document.getElementById("moderator"),
    };
    this.typingTimer = null;
  }

  start() {
    const wanted = this.root.dataset.room;
    const names = storedRooms();
    if (wanted && ROOM_NAME.test(wanted) && !names.includes(wanted)) names.push(wanted);
    saveRooms(names);
    for (const name of names) this.addRoom(name);
    this.activate(this.rooms.has(wanted) ? wanted : names[0] || null);
    this.bindUi();
    this.checkAccount();
    this.connect();
  }

  /** Show the account-only controls to accounts (GET /api/me). */
  async checkAccount() {
    try {
      const response = await fetch("/api/me", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      this.account = (await response.json()).account === true;
    } catch {
      return;
    }
    this.el.accountActions.hidden = !this.account;
  }

  bindUi() {
    this.el.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendComposer();
    });
    this.el.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.sendComposer();
      }
    });
    this.el.joinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const name = this.el.joinInput.value.trim();
      const problem = roomProblem(name);
      if (problem) {
        this.showError(problem);
        return;
      }
      this.el.joinInput.value = "";
      this.joinRoom(name);
    });
    this.el.leave.addEventListener("click", () => {
      if (this.active) this.leaveRoom(this.active);
    });
    window.addEventListener("online", () => this.retryNow());
    this.el.text.addEventListener("input", () => this.sayTyping());
    this.el.searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search(this.el.search.value.trim());
    });
    this.el.newRoom.addEventListener("click", () => this.createRoom());
    this.el.newPrivate.addEventListener("click", () => this.createPrivateRoom());
    this.el.newDm.addEventListener("click", () => this.startDm());
    this.el.dmCancel.addEventListener("click", () => this.activate(this.rooms.keys().next().value ?? null));
    this.el.invite.addEventListener("click", () => this.askMember("invite", "Invite whom? (an account name)"));
    this.el.remove.addEventListener("click", () => this.askMember("remove", "Remove whom from this room?"));
    this.el.moderator.addEventListener("click", () => this.askModerator());
    this.el.mute.addEventListener("click", () => this.askMute());
    this.el.slow.addEventListener("click", () => this.askSlow());
  }

  // -- the connection ----------------------------------------------------------------------------

  setState(state) {
    this.el.state.dataset.state = state;
    this.el.state.textContent = STATE_LABELS[state];
    this.root.dataset.conn = state;
    this.el.send.disabled = state !== "live";
  }

  async connect() {
    this.retryTimer = null;
    if (this.stopped) return;
    this.setState(this.everLive ? "reconnecting" : "connecting");
    let session;
    try {
      const response = await fetch(this.sessionUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ nick: this.nick }),
        credentials: "same-origin",
      });
      if ([400, 403, 409].includes(response.status)) {
        const body = await response.json().catch(() => ({}));
        this.stop(`You cannot chat as ${this.nick} now: ${body.message || `HTTP ${response.status}`}`);
        return;
      }
      if (!response.ok) {
        // 503 busy or degraded, 429: the server says when; anything else: back off.
        this.scheduleReconnect(null, retryAfterDelay(response));
        return;
      }
      session = await response.json();
    } catch {
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(session.ws_url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      if (ws === this.ws) this.receive(event.data);
    });
    ws.addEventListener("close", (event) => {
      if (ws === this.ws) this.closed(event);
    });
  }

  closed(event) {
    this.ws = null;
    this.live = false;
    for (const room of this.rooms.values()) room.joined = false;
    this.pendingJoins.clear();
    this.pendingCreates.clear();
    if (this.pendingDm) {
      // Its room is not known: the text goes back to the composer, still addressed to that person.
      if (!this.el.text.value) this.el.text.value = this.pendingDm.text;
      this.pendingDm = null;
    }
    if (event.code === SIGNED_OUT) {
      this.stop("You were signed out everywhere. Sign in again on the start page to go on.");
      return;
    }
    if (ADMIN_CLOSE_CODES.has(event.code)) {
      this.stop(`You were disconnected by an admin: ${event.reason || (event.code === 4003 ? "banned" : "kicked")}`);
      return;
    }
    const hint = event.code === SERVICE_RESTART ? RETRY_HINT.exec(event.reason || "") : null;
    this.scheduleReconnect(hint ? Number(hint[1]) : null);
  }

  /**
   * Connect again after ``hintMs`` (a restart's hint, plus jitter), after ``waitMs`` (a refusal's
   * Retry-After, jittered already), or after the next backoff step (static/backoff.js).
   */
  scheduleReconnect(hintMs = null, waitMs = null) {
    if (this.stopped) return;
    this.setState("reconnecting");
    let delay;
    if (hintMs !== null) {
      delay = hintMs * (1 + Math.random() * HINT_JITTER); // a planned restart: not a failed attempt
    } else if (waitMs !== null) {
      delay = waitMs; // the server said when: that is the backoff, and the next failure still doubles it
      this.attempt += 1;
    } else {
      delay = backoffDelay(this.attempt);
      this.attempt += 1;
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  retryNow() {
    if (this.retryTimer !== null && !this.stopped) {
      clearTimeout(this.retryTimer);
      this.connect();
    }
  }

  /** Stay disconnected, saying why in #notice. */
  stop(why) {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    this.live = false;
    this.setState("disconnected");
    this.el.notice.textContent = why;
    this.el.notice.hidden = false;
  }

  send(payload) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(payload));
    return true;
  }

  nextRef(prefix) {
    this.refs += 1;
    return `${prefix}${this.pageId}-${this.refs}`;
  }

  // -- events from the server --------------------------------------------------------------------

  receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (!event || typeof event !== "object") return;
    switch (event.type) {
      case "hello":
        return this.onHello(event);
      case "joined":
        return this.onJoined(event);
      case "reset":
        return this.onReset(event);
      case "typing":
        return this.onTyping(event);
      case "message":
        return this.onMessage(event);
      case "presence":
        return this.onPresence(event);
      case "left":
        return; // the room was dropped when the user left it
      case "rooms":
        return this.onRooms(event);
      case "system":
        return this.onSystem(event);
      case "error":
        return this.onError(event);
      case "update":
        return this.onUpdate(event);
      case "room":
        return this.onRoom(event);
      case "invited":
        return this.onInvited(event);
      case "removed":
        return this.onRemoved(event);
      default:
        return;
    }
  }

  onHello() {
    this.live = true;
    this.everLive = true;
    this.attempt = 0;
    this.connections += 1;
    this.setState("live");
    for (const room of this.rooms.values()) this.sendJoin(room);
    this.send({ type: "rooms" });
  }

  sendJoin(room) {
    const ref = this.nextRef("join-");
    const request = { type: "join", room: room.name, ref };
    if (room.joinedOnce) {
      request.since = room.lastId ?? 0;
      if (room.epoch) request.epoch = room.epoch;
    }
    if (this.send(request)) this.pendingJoins.set(ref, room.name);
  }

  onJoined(event) {
    let room = this.rooms.get(event.room);
    for (const [ref, name] of this.pendingJoins) if (name === event.room) this.pendingJoins.delete(ref);
    if (!room && this.pendingDm && typeof event.room === "string" && event.room.startsWith("dm.")) {
      room = this.adoptDm(event.room); // the `dm` sent joined us to the conversation
    }
    if (!room) {
      this.send({ type: "leave", room: event.room }); // left while the join was on its way
      return;
    }
    if (event.reset || (room.epoch && event.epoch && event.epoch !== room.epoch)) this.restartRoom(room);
    if (typeof event.epoch === "string") room.epoch = event.epoch;
    const previous = room.lastId;
    const rejoin = room.joinedOnce;
    room.joined = true;
    room.members = new Set(Array.isArray(event.members) ? event.members : []);
    const history = Array.isArray(event.history) ? event.history : [];
    let fresh = 0;
    for (const entry of history) {
      if (!entry || typeof entry !== "object") continue;
      if (!isUpdate(entry) && entry.ref && entry.from === this.nick) this.pendingSays.delete(entry.ref);
      if (this.addEntry(room, entry)) fresh += 1;
    }
    // Sent before the connection dropped and not in the history: send again, with the same ref
    // (a message the server stored meanwhile is not stored twice: it answers with the original).
    for (const [ref, pending] of this.pendingSays) {
      if (pending.room !== room.name || pending.conn === this.connections) continue;
      pending.conn = this.connections;
      this.send({ type: "say", room: room.name, text: pending.text, ref });
    }
    room.joinedOnce = true;
    if ((rejoin || room.invited) && room.name !== this.active) this.bumpUnread(room, fresh);
    room.invited = false;
    if (event.truncated && history.length) this.backfill(room, previous ?? 0, history[0].id);
    if (room.name === this.active) {
      this.renderMembers();
      this.scrollToBottom();
    }
  }

  /** The room's history restarted on the server under a new epoch. */
  onReset(event) {
    const room = this.rooms.get(event.room);
    if (!room || typeof event.epoch !== "string" || event.epoch === room.epoch) return;
    this.restartRoom(room);
    room.epoch = event.epoch;
  }

  /** Forget the room's ids: the lines shown so far stay, above a notice, out of the id order. */
  restartRoom(room) {
    if (room.lastId === null && !room.seen.size) return;
    for (const line of room.log.querySelectorAll("li[data-id]")) {
      delete line.dataset.id;
      for (const control of line.querySelectorAll(".actions, .picker, .edit-text")) control.remove();
      for (const chip of line.querySelectorAll("button.reaction")) chip.disabled = true;
      line.querySelector("p.text")?.removeAttribute("hidden");
    }
    room.seen = new Set();
    room.lastId = null;
    const notice = element("li", "system history-reset", "The server's history restarted: messages below are new.");
    notice.setAttribute("role", "note");
    room.log.append(notice);
  }

  /** Fetch over HTTP the messages a truncated rejoin left out: ids in (after, before). */
  async backfill(room, after, before) {
    let cursor = after;
    while (cursor < before - 1 && this.rooms.get(room.name) === room) {
      let messages;
      try {
        const url = `/api/rooms/${encodeURIComponent(room.name)}/messages?since=${cursor}&limit=1000`;
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const page = await response.json();
        if (page.epoch !== room.epoch) return; // the history restarted meanwhile: these are other messages
        messages = page.messages;
      } catch {
        this.showError(`Some older messages of ${room.name} could not be loaded.`);
        return;
      }
      if (!Array.isArray(messages) || !messages.length) return;
      for (const message of messages) {
        if (!message || message.id >= before) return;
        this.addEntry(room, message);
        cursor = message.id;
      }
    }
  }

  onMessage(event) {
    const room = this.rooms.get(event.room);
    if (!room) return;
    if (event.ref && event.from === this.nick) this.pendingSays.delete(event.ref);
    const stick = room.name === this.active && this.nearBottom();
    if (!this.addMessage(room, event)) return;
    if (room.typing.delete(event.from)) this.renderTyping();
    if (room.name !== this.active && event.from !== this.nick) {
      if (mentions(String(event.text ?? ""), this.nick)) room.mentioned += 1;
      this.bumpUnread(room, 1);
    }
    if (stick || (room.name === this.active && event.from === this.nick)) this.scrollToBottom();
  }

  onPresence(event) {
    const room = this.rooms.get(event.room);
    if (!room || typeof event.nick !== "string") return;
    if (event.event === "join") room.members.add(event.nick);
    else if (event.event === "leave") room.members.delete(event.nick);
    if (room.name === this.active) this.renderMembers();
  }

  onRooms(event) {
    if (!Array.isArray(event.rooms)) return;
    const entries = event.rooms.filter((r) => r && typeof r.name === "string" && ROOM_NAME.test(r.name));
    // The private rooms you are a member of: joined like the remembered ones (unless this tab left them).
    const left = dismissed();
    for (const entry of entries.filter((r) => r.private === true || privateName(r.name))) {
      let room = this.rooms.get(entry.name);
      if (!room) {
        if (left.has(entry.name)) continue;
        room = this.addRoom(entry.name);
        addStoredRoom(entry.name);
        if (this.live) this.sendJoin(room);
      }
      room.hint = { ...room.hint, private: true, title: typeof entry.title === "string" ? entry.title : undefined };
      this.renderRoomLabel(room);
    }
    this.el.knownRooms.replaceChildren(
      ...entries
        .filter((r) => r.private !== true && !privateName(r.name))
        .map((r) => {
          const option = document.createElement("option");
          option.value = r.name;
          return option;
        }),
    );
  }

  onSystem(event) {
    const text = String(event.text ?? "");
    const targets = event.room ? [this.rooms.get(event.room)].filter(Boolean) : [...this.rooms.values()];
    if (!targets.length && !event.room) {
      this.el.banner.textContent = text;
      this.el.banner.hidden = false;
      return;
    }
    for (const room of targets) {
      const stick = room.name === this.active && this.nearBottom();
      const line = element("li", "system", text);
      line.setAttribute("role", "note");
      room.log.append(line);
      if (stick) this.scrollToBottom();
    }
  }

  onError(event) {
    const ref = typeof event.ref === "string" ? event.ref : null;
    let where = null; // the room the refused command was about
    if (ref && this.pendingDm && ref === this.pendingDm.ref) {
      if (!this.el.text.value) this.el.text.value = this.pendingDm.text;
      this.pendingDm = null;
    }
    if (ref && this.pendingCreates.has(ref)) this.pendingCreates.delete(ref);
    if (ref && this.commands.has(ref)) {
      where = this.commands.get(ref);
      this.commands.delete(ref);
    }
    if (ref && this.pendingJoins.has(ref)) {
      const name = this.pendingJoins.get(ref);
      this.pendingJoins.delete(ref);
      if (event.code === "already_joined") {
        const room = this.rooms.get(name);
        if (room) room.joined = true;
        return;
      }
      this.dropRoom(name);
    }
    if (ref && this.pendingSays.has(ref)) {
      const pending = this.pendingSays.get(ref);
      where = pending.room;
      if (!this.el.text.value) this.el.text.value = pending.text; // nothing the user typed is lost
      this.pendingSays.delete(ref);
    }
    const room = where ? this.rooms.get(where) : null;
    const wait = Number(event.wait);
    if (room && Number.isFinite(wait) && wait > 0 && (event.code === "muted" || event.code === "rate_limited")) {
      const text =
        event.code === "muted" ? `You are muted here for ${duration(wait)}.` : `Slow mode: wait ${Math.ceil(wait)} s.`;
      this.noteInRoom(room, text);
      return;
    }
    this.showError(event.message || event.code || "error");
  }

  /** A line in ``room``'s log that only this page sees: why something was refused there. */
  noteInRoom(room, text) {
    const stick = room.name === this.active && this.nearBottom();
    const line = element("li", "local-notice", text);
    line.setAttribute("role", "alert");
    room.log.append(line);
    if (stick || room.name === this.active) this.scrollToBottom();
  }

  // -- owned and private rooms, direct messages (docs/protocol.md §3.1) -------------------------------

  /** A room's settings changed, or it was created, or joined: keep them, show who may do what. */
  onRoom(event) {
    if (typeof event.room !== "string" || !ROOM_NAME.test(event.room)) return;
    let room = this.rooms.get(event.room);
    if (!room && this.pendingDm && Array.isArray(event.dm) && event.dm.some((n) => this.sameName(n, this.pendingDm.to))) {
      room = this.adoptDm(event.room);
    } else if (!room && this.pendingCreates.size && event.owner && this.sameName(event.owner, this.nick)) {
      // The answer to a `create`: by its ref, or else the oldest one waiting.
      const ref = this.pendingCreates.has(event.ref) ? event.ref : this.pendingCreates.values().next().value;
      this.pendingCreates.delete(ref);
      setDismissed(event.room, false);
      this.joinRoom(event.room);
      room = this.rooms.get(event.room);
    }
    if (!room) return;
    room.info = event;
    this.renderRoomLabel(room);
    if (room.name === this.active) this.renderRoomHeader();
  }

  onInvited(event) {
    if (typeof event.room !== "string" || !ROOM_NAME.test(event.room)) return;
    setDismissed(event.room, false);
    let room = this.rooms.get(event.room);
    const hint = event.dm === true ? { private: true, dm: String(event.by ?? "") } : { private: true, title: event.title };
    if (!room) {
      room = this.addRoom(event.room);
      room.invited = true;
      addStoredRoom(event.room);
      if (this.live) this.sendJoin(room);
    }
    room.hint = { ...room.hint, ...hint };
    this.renderRoomLabel(room);
  }

  onRemoved(event) {
    const room = this.rooms.get(event.room);
    if (!room) return;
    const label = this.labelOf(room);
    this.dropRoom(room.name);
    this.showError(`You were removed from ${label}${event.by ? ` by ${event.by}` : ""}.`, "info");
  }

  /** The `dm` sent came back as its room: list it, show it, keep the message to send again if need be. */
  adoptDm(name) {
    const pending = this.pendingDm;
    this.pendingDm = null;
    setDismissed(name, false);
    const room = this.rooms.get(name) ?? this.addRoom(name);
    room.hint = { ...room.hint, private: true, dm: pending.to };
    addStoredRoom(name);
    this.pendingSays.set(pending.ref, { room: name, text: pending.text, conn: this.connections });
    this.renderRoomLabel(room);
    this.activate(name);
    return room;
  }

  /** Names of accounts are the same whatever their case (docs/protocol.md §1). */
  sameName(a, b) {
    return String(a).toLowerCase() === String(b).toLowerCase();
  }

  /** What a room is called in the page: its title, "the other person" for a DM, else its name. */
  labelOf(room) {
    const info = room.info ?? {};
    if (Array.isArray(info.dm)) {
      const others = info.dm.map(String).filter((n) => !this.sameName(n, this.nick));
      return others[0] ?? this.nick;
    }
    if (room.hint.dm) return room.hint.dm;
    if (typeof info.title === "string" && info.title) return info.title;
    if (typeof room.hint.title === "string" && room.hint.title) return room.hint.title;
    if (room.name.startsWith("dm.")) return "direct message";
    if (room.name.startsWith("p.")) return "private room";
    return room.name;
  }

  kindOf(room) {
    const info = room.info ?? {};
    if (Array.isArray(info.dm) || room.hint.dm || room.name.startsWith("dm.")) return "dm";
    if (info.private === true || room.hint.private || room.name.startsWith("p.")) return "private";
    return "public";
  }

  renderRoomLabel(room) {
    const kind = this.kindOf(room);
    room.item.classList.toggle("private", kind === "private");
    room.item.classList.toggle("dm", kind === "dm");
    room.item.querySelector(".room-name").textContent = this.labelOf(room);
    room.log.classList.toggle("can-moderate", this.mayModerate(room));
    if (room.name === this.active) {
      this.renderRoomHeader();
      this.renderTitle();
    }
  }

  isOwner(room) {
    return Boolean(room?.info?.owner) && this.sameName(room.info.owner, this.nick);
  }

  mayModerate(room) {
    if (!room?.info) return false;
    const moderators = Array.isArray(room.info.moderators) ? room.info.moderators : [];
    return this.isOwner(room) || moderators.some((n) => this.sameName(n, this.nick));
  }

  /** The shown room's title, and the settings its owner and moderators may change. */
  renderRoomHeader() {
    const room = this.active ? this.rooms.get(this.active) : null;
    const kind = room ? this.kindOf(room) : "public";
    if (this.dmTo) {
      this.el.title.textContent = this.dmTo;
    } else {
      this.el.title.textContent = room ? this.labelOf(room) : "No room";
    }
    this.el.title.classList.toggle("private", kind === "private");
    this.el.title.classList.toggle("dm", kind === "dm" || Boolean(this.dmTo));
    const moderate = Boolean(room) && this.mayModerate(room);
    this.el.invite.hidden = !(moderate && kind === "private");
    this.el.remove.hidden = !(moderate && kind === "private");
    this.el.mute.hidden = !moderate;
    this.el.slow.hidden = !moderate;
    this.el.moderator.hidden = !(room && this.isOwner(room));
    const slow = Number(room?.info?.slow) || 0;
    this.el.slowMode.textContent = slow > 0 ? `slow mode: ${slow} s` : "";
    this.el.slowMode.hidden = !(slow > 0);
    this.el.tools.hidden = [...this.el.tools.children].every((child) => child.hidden);
  }

  /** Send a command about ``room``; its error, if any, shows in that room. */
  command(room, payload) {
    const ref = this.nextRef(`${payload.type}-`);
    if (!this.send({ ...payload, room: room.name, ref })) {
      this.showError("Not connected: try again in a moment.");
      return;
    }
    this.commands.set(ref, room.name);
    while (this.commands.size > MAX_COMMANDS) this.commands.delete(this.commands.keys().next().value);
  }

  shownRoom() {
    const room = this.active ? this.rooms.get(this.active) : null;
    if (!room || !room.joined) {
      this.showError("Join the room first.");
      return null;
    }
    return room;
  }

  /** Prompt for an account name and send ``type`` (invite, remove) about it to the shown room. */
  askMember(type, question) {
    const room = this.shownRoom();
    const nick = room ? prompt(question)?.trim() : "";
    if (!nick) return;
    this.command(room, { type, nick });
  }

  askModerator() {
    const room = this.shownRoom();
    const nick = room ? prompt("Make whom a moderator? (an account name)")?.trim() : "";
    if (!nick) return;
    this.command(room, { type: "moderator", nick, on: true });
  }

  askMute() {
    const room = this.shownRoom();
    const nick = room ? prompt("Mute whom?")?.trim() : "";
    if (!nick) return;
    const answer = prompt(`Mute ${nick} for how many minutes? (0 lifts the mute)`, "10");
    if (answer === null) return;
    const minutes = Number(answer.trim());
    if (!Number.isFinite(minutes) || minutes < 0) {
      this.showError("Give a number of minutes.");
      return;
    }
    this.command(room, { type: "mute", nick, seconds: Math.round(minutes * 60) });
  }

  askSlow() {
    const room = this.shownRoom();
    if (!room) return;
    const current = String(Number(room.info?.slow) || 10);
    const answer = prompt("Slow mode: seconds between two messages of one person (0 turns it off)", current);
    if (answer === null) return;
    const seconds = Number(answer.trim());
    if (!Number.isInteger(seconds) || seconds < 0) {
      this.showError("Give a whole number of seconds.");
      return;
    }
    this.command(room, { type: "slow", seconds });
  }

  createRoom() {
    const name = prompt("Name of the new room (you will own it)")?.trim();
    if (!name) return;
    const problem = roomProblem(name);
    if (problem) {
      this.showError(problem);
      return;
    }
    this.sendCreate({ type: "create", room: name });
  }

  createPrivateRoom() {
    const title = prompt("Title of the new private room (only people you invite see it)");
    if (title === null) return;
    const request = { type: "create", private: true };
    if (title.trim()) request.title = title.trim().slice(0, 64);
    this.sendCreate(request);
  }

  sendCreate(request) {
    const ref = this.nextRef("create-");
    if (!this.send({ ...request, ref })) {
      this.showError("Not connected: try again in a moment.");
      return;
    }
    this.pendingCreates.add(ref);
  }

  /** Prompt for a name; show that conversation, or let the composer start it. */
  startDm() {
    const name = prompt("Message whom? (an account name)")?.trim();
    if (!name) return;
    const problem = nickProblem(name);
    if (problem) {
      this.showError(problem);
      return;
    }
    if (this.sameName(name, this.nick)) {
      this.showError("That is you.");
      return;
    }
    for (const room of this.rooms.values()) {
      if (this.kindOf(room) === "dm" && this.sameName(this.labelOf(room), name)) {
        this.activate(room.name);
        this.el.text.focus();
        return;
      }
    }
    this.activate(null);
    this.dmTo = name;
    this.el.dmTo.textContent = name;
    this.el.dmBar.hidden = false;
    this.el.empty.hidden = true;
    this.el.text.disabled = false;
    this.renderRoomHeader();
    this.el.text.focus();
  }

  sendDm(text) {
    if (!this.live) {
      this.showError("Not connected: the message was not sent.");
      return;
    }
    if (this.pendingDm) {
      this.showError("Wait a moment: the conversation is being opened.");
      return;
    }
    const ref = this.nextRef("dm-");
    if (!this.send({ type: "dm", to: this.dmTo, text, ref })) {
      this.showError("Not connected: the message was not sent.");
      return;
    }
    this.pendingDm = { to: this.dmTo, ref, text };
    this.el.text.value = "";
  }

  // -- rooms ---------------------------------------------------------------------------------------

  addRoom(name) {
    const room = new Room(name);
    this.rooms.set(name, room);
    const item = element("li");
    item.dataset.room = name;
    const button = element("button", "room-link");
    button.type = "button";
    button.append(element("span", "room-name", name));
    const unread = element("span", "unread");
    unread.hidden = true;
    unread.setAttribute("aria-label", "unread messages");
    button.append(unread);
    button.addEventListener("click", () => this.activate(name));
    item.append(button);
    room.item = item;
    room.log.addEventListener("click", (event) => this.onLogClick(room, event));
    room.log.addEventListener("keydown", (event) => {
      const line = event.target.closest?.("li.msg");
      if (event.key !== "Escape" || !event.target.closest(".picker") || !line) return;
      togglePicker(line); // Escape closes the emoji picker, back to its button
      line.querySelector("button.react-add")?.focus();
    });
    this.el.roomsList.append(item);
    this.renderRoomLabel(room);
    return room;
  }

  joinRoom(name) {
    let room = this.rooms.get(name);
    if (!room) {
      room = this.addRoom(name);
      addStoredRoom(name);
      if (this.live) this.sendJoin(room);
    }
    this.activate(name);
    this.el.text.focus();
  }

  leaveRoom(name) {
    const room = this.rooms.get(name);
    if (room && room.joined) this.send({ type: "leave", room: name });
    if (room && this.kindOf(room) !== "public") setDismissed(name, true); // still a member: not joined again by itself
    this.dropRoom(name);
  }

  dropRoom(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    this.rooms.delete(name);
    removeStoredRoom(name);
    room.item.remove();
    if (this.active === name) this.activate(this.rooms.keys().next().value ?? null);
  }

  activate(name) {
    const room = name ? this.rooms.get(name) : null;
    this.active = room ? room.name : null;
    this.dmTo = null;
    this.el.dmBar.hidden = true;
    for (const other of this.rooms.values()) other.item.classList.toggle("active", other === room);
    this.el.messages.replaceChildren(...(room ? [room.log] : []));
    this.renderRoomHeader();
    this.el.leave.hidden = !room;
    this.el.empty.hidden = Boolean(room);
    this.el.text.disabled = !room;
    if (room) {
      room.unread = 0;
      room.mentioned = 0;
      this.renderUnread(room);
      this.scrollToBottom();
    }
    this.renderMembers();
    this.renderTyping();
    const url = room ? `/chat?room=${encodeURIComponent(room.name)}` : "/chat";
    history.replaceState(null, "", url);
    this.renderTitle();
  }

  bumpUnread(room, count) {
    if (count <= 0) return;
    room.unread += count;
    this.renderUnread(room);
    this.renderTitle();
  }

  renderUnread(room) {
    const badge = room.item.querySelector(".unread");
    badge.textContent = (room.mentioned ? "@ " : "") + (room.unread > 99 ? "99+" : String(room.unread));
    badge.hidden = room.unread === 0;
    badge.classList.toggle("mention", room.mentioned > 0);
    badge.dataset.mentions = String(room.mentioned);
    badge.title = room.mentioned ? `${room.mentioned} mention${room.mentioned === 1 ? "" : "s"} of you` : "";
  }

  renderTitle() {
    let unread = 0;
    for (const room of this.rooms.values()) unread += room.unread;
    const room = this.active ? this.rooms.get(this.active) : null;
    const name = room ? `Chat · ${this.labelOf(room)}` : "Chat";
    document.title = unread ? `(${unread}) ${name}` : name;
  }

  renderMembers() {
    const room = this.rooms.get(this.active);
    const nicks = room ? [...room.members].sort() : [];
    this.el.members.replaceChildren(
      ...nicks.map((nick) => {
        const item = element("li", nick === this.nick ? "me" : "", nick);
        item.dataset.nick = nick;
        return item;
      }),
    );
    this.el.memberCount.textContent = room ? `(${nicks.length})` : "";
  }

  // -- messages ------------------------------------------------------------------------------------

  /** A message or an update of ``room``'s sequence; true if it was a message not shown before. */
  addEntry(room, entry) {
    if (isUpdate(entry)) {
      this.applyUpdate(room, entry);
      return false;
    }
    return this.addMessage(room, entry);
  }

  /** Put a message in its room's log, in id order; false if it was there already. */
  addMessage(room, message) {
    if (!message || !Number.isInteger(message.id) || room.seen.has(message.id)) return false;
    room.seen.add(message.id);
    const line = this.renderMessage(message);
    if (room.lastId === null || message.id > room.lastId) {
      room.log.append(line);
      room.lastId = message.id;
    } else {
      const later = [...room.log.querySelectorAll("li[data-id]")].find((li) => Number(li.dataset.id) > message.id);
      room.log.insertBefore(line, later ?? null);
    }
    return true;
  }

  renderMessage(message) {
    return renderMessage(message, this.nick, (text) => mentions(text, this.nick));
  }

  /** An edit, delete or reaction: its id counts for since; the message it changed is shown anew. */
  applyUpdate(room, update) {
    if (!Number.isInteger(update.id) || room.seen.has(update.id)) return;
    room.seen.add(update.id);
    if (room.lastId === null || update.id > room.lastId) room.lastId = update.id;
    const message = update.message;
    if (!message || typeof message !== "object" || !Number.isInteger(message.id)) return;
    const old = room.log.querySelector(`li.msg[data-id="${message.id}"]`);
    if (!old) return; // not on screen: nothing to change
    const draft = old.querySelector(".edit-text")?.value;
    const picking = Boolean(old.querySelector(".picker"));
    const focused = old.contains(document.activeElement) ? document.activeElement : null;
    const line = this.renderMessage(message);
    old.replaceWith(line);
    if (line.classList.contains("deleted")) return;
    if (draft !== undefined) this.startEdit(room, line, draft);
    else if (picking) togglePicker(line);
    if (draft === undefined && focused?.tagName === "BUTTON") {
      const same = [...line.querySelectorAll("button")].find(
        (b) => b.classList[0] === focused.classList[0] && b.dataset.emoji === focused.dataset.emoji,
      );
      same?.focus();
    }
  }

  onUpdate(event) {
    const room = this.rooms.get(event.room);
    if (!room) return;
    const stick = room.name === this.active && this.nearBottom();
    this.applyUpdate(room, event);
    if (stick) this.scrollToBottom();
  }

  /** The buttons of a room's lines: edit, delete, react (one listener for the whole log). */
  onLogClick(room, event) {
    const control = event.target.closest("button");
    const line = control?.closest("li.msg");
    if (!line || !line.dataset.id) return; // a line from before a history reset: its id means nothing now
    const id = Number(line.dataset.id);
    if (control.classList.contains("edit")) {
      this.startEdit(room, line);
    } else if (control.classList.contains("delete")) {
      if (confirm("Delete this message for everyone?")) this.command(room, { type: "delete", id });
    } else if (control.classList.contains("react-add")) {
      togglePicker(line)?.querySelector("button")?.focus();
    } else if (control.classList.contains("pick") || control.classList.contains("reaction")) {
      const emoji = control.dataset.emoji;
      this.command(room, { type: "react", id, emoji, on: !reacted(line, emoji) });
      if (control.classList.contains("pick")) {
        togglePicker(line);
        line.querySelector("button.react-add")?.focus();
      }
    }
  }

  /** Edit your message in place: Enter sends `edit`, Escape puts the text back. */
  startEdit(room, line, draft) {
    const id = Number(line.dataset.id);
    const before = line.querySelector("p.text")?.textContent ?? "";
    const cancel = () => {
      closeEditor(line);
      line.querySelector("button.edit")?.focus();
    };
    const submit = (text) => {
      if (!text.trim() || text === before) {
        cancel();
        return;
      }
      if (text.length > this.maxText) {
        this.showError(`A message is at most ${this.maxText} characters.`);
        return;
      }
      this.command(room, { type: "edit", id, text });
      cancel(); // the `update` that answers shows the new text
    };
    openEditor(line, submit, cancel, draft);
  }

  /** Search the history (GET /api/search) and list what matches under the form. */
  async search(query) {
    const status = this.el.searchStatus;
    this.el.searchResults.replaceChildren();
    if (!query) {
      status.hidden = true;
      return;
    }
    status.hidden = false;
    status.textContent = "Searching…";
    let body;
    try {
      const response = await fetch(`/api/search?q=${encodeURIComponent(query)}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      body = await response.json().catch(() => ({}));
      if (!response.ok) {
        status.textContent = body.message || `The search failed (HTTP ${response.status}).`;
        return;
      }
    } catch {
      status.textContent = "Could not reach the server.";
      return;
    }
    const results = Array.isArray(body.results) ? body.results : [];
    status.textContent = results.length ? `${results.length} found` : "Nothing found.";
    for (const message of results) {
      const item = element("li", "result");
      item.dataset.room = String(message.room ?? "");
      item.dataset.id = String(message.id ?? "");
      const head = element("div", "meta");
      const known = this.rooms.get(message.room);
      const where = known && this.kindOf(known) !== "public" ? this.labelOf(known) : `#${message.room}`;
      head.append(element("span", "room", where), element("span", "from", String(message.from ?? "")));
      item.append(head, element("p", "text", String(message.text ?? "")));
      if (this.rooms.has(message.room)) item.addEventListener("click", () => this.activate(message.room));
      this.el.searchResults.append(item);
    }
  }

  /** Tell the shown room this tab is typing: at most once every TYPING_EVERY_MS. */
  sayTyping() {
    const room = this.active ? this.rooms.get(this.active) : null;
    if (!room || !room.joined || !this.el.text.value) return;
    const now = Date.now();
    if (now - room.typingSent < TYPING_EVERY_MS) return;
    if (this.send({ type: "typing", room: room.name })) room.typingSent = now;
  }

  onTyping(event) {
    const room = this.rooms.get(event.room);
    if (!room || typeof event.nick !== "string" || event.nick === this.nick) return;
    room.typing.set(event.nick, Date.now() + TYPING_SHOWN_MS);
    if (room.name === this.active) this.renderTyping();
  }

  /** "alice is typing…" under the shown room's messages, until their time is up. */
  renderTyping() {
    clearTimeout(this.typingTimer);
    const room = this.active ? this.rooms.get(this.active) : null;
    const now = Date.now();
    const nicks = [];
    if (room) {
      for (const [nick, until] of room.typing) {
        if (until > now) nicks.push(nick);
        else room.typing.delete(nick);
      }
    }
    nicks.sort();
    this.el.typing.textContent =
      nicks.length === 0
        ? ""
        : nicks.length === 1
          ? `${nicks[0]} is typing…`
          : nicks.length <= 3
            ? `${nicks.join(", ")} are typing…`
            : "Several people are typing…";
    if (nicks.length) this.typingTimer = setTimeout(() => this.renderTyping(), 1000);
  }

  sendComposer() {
    const text = this.el.text.value;
    if (!text.trim()) return;
    if (text.length > this.maxText) {
      this.showError(`A message is at most ${this.maxText} characters.`);
      return;
    }
    if (this.dmTo) {
      this.sendDm(text);
      return;
    }
    if (!this.active) {
      this.showError("Join a room first.");
      return;
    }
    const room = this.rooms.get(this.active);
    if (!this.live || !room.joined) {
      this.showError("Not connected: the message was not sent.");
      return;
    }
    const ref = this.nextRef("say-");
    if (!this.send({ type: "say", room: room.name, text, ref })) {
      this.showError("Not connected: the message was not sent.");
      return;
    }
    this.pendingSays.set(ref, { room: room.name, text, conn: this.connections });
    this.el.text.value = "";
  }

  // -- helpers -------------------------------------------------------------------------------------

  nearBottom() {
    const box = this.el.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    const box = this.el.messages;
    box.scrollTop = box.scrollHeight;
  }

  showError(text, kind) {
    const toast = element("div", kind === "info" ? "error-toast info" : "error-toast", text);
    this.el.errors.append(toast);
    while (this.el.errors.children.length > 3) this.el.errors.firstElementChild.remove();
    setTimeout(() => toast.remove(), ERROR_TOAST_MS);
  }
}

const root = document.getElementById("chat-app");
if (root) new ChatApp(root).start();
