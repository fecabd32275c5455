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
//   #errors .error-toast  error events, shown for a few seconds
//
// Reconnecting: exponential backoff with jitter; before each attempt a fresh
// ws_url from POST /api/session (same nick, the cookie keeps the session);
// every room is joined again with since = the last id seen in it (and the
// epoch that id belongs to), and messages are deduplicated by id per room.
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

/** Room names as the server checks them: ^[\w.-]{1,64}$ (Python's Unicode \w). */
export const ROOM_NAME = /^[\p{L}\p{N}_.-]{1,64}$/u;

const MAX_NICK = 32;
const NOT_PRINTABLE = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;
const STORAGE_KEY = "chat.rooms";

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

// -- the chat page ----------------------------------------------------------------------------

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10_000;
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

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

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
    this.pendingSays = new Map(); // ref -> {room, text}: sent, not yet seen back; sent again after a reconnect
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
    this.connect();
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
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
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
    if (event.code === SIGNED_OUT) {
      this.stop("You were signed out everywhere. Sign in again on the start page to go on.");
      return;
    }
    if (ADMIN_CLOSE_CODES.has(event.code)) {
      this.stop(`You were disconnected by an admin: ${event.reason || (event.code === 4003 ? "banned" : "kicked")}`);
      return;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.setState("reconnecting");
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    this.attempt += 1;
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
      default:
        return;
    }
  }

  onHello() {
    this.live = true;
    this.everLive = true;
    this.attempt = 0;
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
    const room = this.rooms.get(event.room);
    for (const [ref, name] of this.pendingJoins) if (name === event.room) this.pendingJoins.delete(ref);
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
    for (const message of history) {
      if (message.ref && message.from === this.nick) this.pendingSays.delete(message.ref);
      if (this.addMessage(room, message)) fresh += 1;
    }
    // Sent before the connection dropped and not in the history: send again, with the same ref
    // (a message the server stored meanwhile is not stored twice: it answers with the original).
    for (const [ref, pending] of this.pendingSays) {
      if (pending.room === room.name) this.send({ type: "say", room: room.name, text: pending.text, ref });
    }
    room.joinedOnce = true;
    if (rejoin && room.name !== this.active) this.bumpUnread(room, fresh);
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
    for (const line of room.log.querySelectorAll("li[data-id]")) delete line.dataset.id;
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
        if (message.id >= before) return;
        this.addMessage(room, message);
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
    this.el.knownRooms.replaceChildren(
      ...event.rooms
        .filter((r) => r && typeof r.name === "string")
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
      if (!this.el.text.value) this.el.text.value = this.pendingSays.get(ref).text;
      this.pendingSays.delete(ref);
    }
    this.showError(event.message || event.code || "error");
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
    this.el.roomsList.append(item);
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
    for (const other of this.rooms.values()) other.item.classList.toggle("active", other === room);
    this.el.messages.replaceChildren(...(room ? [room.log] : []));
    this.el.title.textContent = room ? room.name : "No room";
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
    const name = this.active ? `Chat · ${this.active}` : "Chat";
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
    const from = String(message.from ?? "");
    const line = element("li", from === this.nick ? "msg mine" : "msg");
    if (from !== this.nick && mentions(String(message.text ?? ""), this.nick)) line.classList.add("mention");
    line.dataset.id = String(message.id);
    line.dataset.from = from;
    const head = element("div", "meta");
    head.append(element("span", "from", from));
    if (Number.isFinite(message.ts)) {
      const when = new Date(message.ts);
      const time = element("time", "", timeFormat.format(when));
      time.dateTime = when.toISOString();
      time.title = dateTimeFormat.format(when);
      head.append(time);
    }
    line.append(head, element("p", "text", String(message.text ?? "")));
    return line;
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
      head.append(element("span", "room", `#${message.room}`), element("span", "from", String(message.from ?? "")));
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
    if (!this.active) {
      this.showError("Join a room first.");
      return;
    }
    if (text.length > this.maxText) {
      this.showError(`A message is at most ${this.maxText} characters.`);
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
    this.pendingSays.set(ref, { room: room.name, text });
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

  showError(text) {
    const toast = element("div", "error-toast", text);
    this.el.errors.append(toast);
    while (this.el.errors.children.length > 3) this.el.errors.firstElementChild.remove();
    setTimeout(() => toast.remove(), ERROR_TOAST_MS);
  }
}

const root = document.getElementById("chat-app");
if (root) new ChatApp(root).start();
