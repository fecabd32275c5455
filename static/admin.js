// The admin page: polls the admin API every 2 s and renders what it gets.
//
// Data from the server only ever reaches the page through textContent,
// dataset and value, never through innerHTML. State-changing requests carry
// the session's CSRF token in X-CSRF-Token; X-Requested-With tells the server
// not to answer 401 with a Basic challenge (the browser would pop up a dialog),
// so an expired session just goes back to the login form.

const POLL_MS = 2000;

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF_TOKEN = meta("csrf-token");
const API = meta("admin-api");
const LOGIN = meta("admin-login");

const $ = (id) => document.getElementById(id);

class ApiError extends Error {}

async function call(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" };
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF_TOKEN;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 401) {
    window.location.assign(LOGIN);
    throw new ApiError("logged out");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) throw new ApiError(data?.message || `HTTP ${response.status}`);
  return data;
}

// -- formatting ----------------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

function bytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const parts = [];
  for (const [size, unit] of [[86400, "d"], [3600, "h"], [60, "m"]]) {
    if (s >= size || parts.length) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  parts.push(`${s}s`);
  return parts.slice(0, 2).join(" ");
}

const clock = (epochSeconds) => new Date(epochSeconds * 1000).toLocaleString();
const rtt = (ms) => (ms === null || ms === undefined ? "–" : `${Number(ms).toFixed(1)} ms`);

function status(text, kind = "") {
  const element = $("status");
  element.textContent = text;
  element.className = kind;
}

// -- the clients table: one row per connection, updated in place --------------------------------

const COLUMNS = ["id", "nick", "addr", "user_agent", "rooms", "connected", "msgs", "bytes", "buffered", "rtt", "actions"];
const NUMERIC = new Set(["msgs", "bytes", "buffered", "rtt"]);
const rows = new Map(); // connection id -> <tr>

function clientRow(client) {
  const row = document.createElement("tr");
  row.dataset.id = client.id;
  for (const column of COLUMNS) {
    const cell = row.insertCell();
    cell.dataset.column = column;
    if (NUMERIC.has(column)) cell.className = "num";
  }
  const actions = row.cells[COLUMNS.indexOf("actions")];
  for (const [action, label] of [["kick", "Kick"], ["ban", "Ban…"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.action = action;
    button.textContent = label;
    actions.append(button);
  }
  return row;
}

function fillClientRow(row, client, now) {
  const text = {
    id: client.id,
    nick: client.nick,
    addr: client.addr ?? "",
    user_agent: client.user_agent ?? "",
    rooms: [...(client.rooms || []), ...(client.private_rooms ? [`+${client.private_rooms} private`] : [])].join(", "),
    connected: client.connected_at ? `${duration(now - client.connected_at)} ago` : "",
    msgs: `${client.msgs_in ?? 0} / ${client.msgs_out ?? 0}`,
    bytes: `${bytes(client.bytes_in)} / ${bytes(client.bytes_out)}`,
    buffered: bytes(client.buffered),
    rtt: rtt(client.rtt_ms),
  };
  for (const [column, value] of Object.entries(text)) {
    const cell = row.cells[COLUMNS.indexOf(column)];
    if (cell.textContent !== value) cell.textContent = value;
  }
  row.cells[COLUMNS.indexOf("user_agent")].title = client.user_agent ?? "";
  row.cells[COLUMNS.indexOf("connected")].title = client.connected_at ? clock(client.connected_at) : "";
  row.dataset.nick = client.nick;
  row.classList.toggle("stalled", (client.buffered || 0) > 0);
}

function renderClients(clients) {
  const now = Date.now() / 1000;
  const sorted = [...clients].sort(
    (a, b) => (b.buffered || 0) - (a.buffered || 0) || (a.connected_at || 0) - (b.connected_at || 0),
  );
  const body = $("clients").tBodies[0];
  const seen = new Set();
  sorted.forEach((client, index) => {
    seen.add(client.id);
    let row = rows.get(client.id);
    if (!row) {
      row = clientRow(client);
      rows.set(client.id, row);
    }
    fillClientRow(row, client, now);
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] || null);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  $("no-clients").hidden = clients.length > 0;
}

// -- rooms, bans, totals -------------------------------------------------------------------------

function fillTable(id, records, cellsOf) {
  const body = $(id).tBodies[0];
  const fresh = records.map((record) => {
    const row = document.createElement("tr");
    for (const [value, className] of cellsOf(record)) {
      const cell = row.insertCell();
      cell.textContent = value;
      if (className) cell.className = className;
    }
    return row;
  });
  body.replaceChildren(...fresh);
}

let roomNames = "";

function renderRooms(rooms, totals) {
  const sorted = [...rooms].sort((a, b) => b.members - a.members || a.name.localeCompare(b.name));
  fillTable("rooms", sorted, (room) => [[room.name], [String(room.members), "num"]]);
  $("no-rooms").hidden = rooms.length > 0;
  const names = rooms.map((room) => room.name).sort();
  if (names.join("\n") !== roomNames) {
    roomNames = names.join("\n");
    $("room-names").replaceChildren(
      ...names.map((name) => {
        const option = document.createElement("option");
        option.value = name;
        return option;
      }),
    );
  }
  $("total-clients").textContent = String(totals.clients);
  $("total-rooms").textContent = String(totals.rooms);
  $("total-bytes-in").textContent = bytes(totals.bytes_in);
  $("total-bytes-out").textContent = bytes(totals.bytes_out);
  $("total-buffered").textContent = bytes(totals.buffered);
  $("total-rate").textContent = messageRate(totals.messages_stored);
  $("total-fanout").textContent = totals.fanout_p99_ms == null ? "–" : `${totals.fanout_p99_ms.toFixed(2)} ms`;
}

// Messages per second since the previous poll (the server counts, the page divides).
let lastCount = null;
function messageRate(count) {
  const now = performance.now();
  const previous = lastCount;
  lastCount = { count, at: now };
  if (previous === null || now <= previous.at || count < previous.count) return "–";
  return ((count - previous.count) / ((now - previous.at) / 1000)).toFixed(1);
}

function renderModeration(actions) {
  fillTable("moderation", actions, (action) => [
    [clock(action.ts / 1000)],
    [action.room],
    [action.actor],
    [action.action],
    [action.target],
    [action.detail],
  ]);
  $("no-moderation").hidden = actions.length > 0;
}

function renderBans(bans) {
  const now = Date.now() / 1000;
  fillTable("bans", bans, (ban) => [[ban.nick], [clock(ban.until)], [duration(ban.until - now), "num"]]);
  $("no-bans").hidden = bans.length > 0;
}

// -- polling -------------------------------------------------------------------------------------

async function load() {
  const [clients, rooms, bans, moderation] = await Promise.all([
    call("/clients"),
    call("/rooms"),
    call("/bans"),
    call("/moderation"),
  ]);
  renderClients(clients.clients);
  renderRooms(rooms.rooms, rooms.totals);
  renderBans(bans.bans);
  renderModeration(moderation.actions);
}

let loading = null;
let again = false;

// Load now; if a load is under way, load once more after it (so an action's effect shows).
function refresh() {
  if (loading) {
    again = true;
    return loading;
  }
  loading = (async () => {
    do {
      again = false;
      await load();
    } while (again);
  })().finally(() => {
    loading = null;
  });
  return loading;
}

async function poll() {
  try {
    await refresh();
    status(`Updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.message === "logged out")) {
      status(`Cannot reach the server (${error.message}); retrying…`, "error");
    }
  }
  setTimeout(poll, POLL_MS);
}

// -- actions -------------------------------------------------------------------------------------

async function act(description, path, body) {
  try {
    await call(path, { method: "POST", body });
    status(description, "done");
  } catch (error) {
    status(`Failed: ${error.message}`, "error");
    return;
  }
  refresh().catch(() => {});
}

$("clients").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  const { id, nick } = row.dataset;
  if (button.dataset.action === "kick") {
    act(`Kicked ${nick} (${id}).`, `/clients/${encodeURIComponent(id)}/kick`);
  } else {
    $("ban-nick").value = nick;
    $("ban-seconds").focus();
  }
});

$("ban-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const nick = $("ban-nick").value;
  const seconds = Number($("ban-seconds").value);
  act(`Banned ${nick} for ${duration(seconds)}.`, "/bans", { nick, seconds });
});

$("broadcast-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = $("broadcast-room").value.trim();
  const text = $("broadcast-text").value;
  const body = room ? { text, room } : { text };
  act(`System message sent to ${room || "every client"}.`, "/broadcast", body).then(() => {
    if ($("status").className === "done") $("broadcast-text").value = "";
  });
});

poll();
