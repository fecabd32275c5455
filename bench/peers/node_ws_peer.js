#!/usr/bin/env node
/*
 * A reference chat on Node and the `ws` package: the protocol subset the bench uses.
 *
 *     node bench/peers/node_ws_peer.js --bind 127.0.0.1:0
 *
 * The same as bench/peers/websockets_peer.py, on another stack. Serves
 * ws://HOST:PORT/<any path>?nick=NAME without authentication: `hello` on
 * connect; `join` (with `since`) answered by `joined` with the room's nicks
 * and its history; `say` broadcast as `message` with ids increasing by one per
 * room. A broadcast serializes the event once, to one Buffer, and calls
 * `ws.send(buffer, {binary: false})` for each member, as ws's own broadcast
 * example does: ws frames each send itself (header and payload corked into one
 * write). Compression is off (`perMessageDeflate: false`, also ws's default on
 * a server); ws sets TCP_NODELAY on every socket it upgrades, so nothing is
 * held back by Nagle. History is the last 1000 messages per room, in memory.
 * Prints `listening on ws://HOST:PORT/ws` once bound; stops on SIGTERM or SIGINT.
 *
 * `ws` is the load generator's package, pinned in bench/package-lock.json
 * (`npm ci` in bench/, which `python -m bench.run` does when it is missing).
 */
'use strict';

const { WebSocketServer } = require('ws');

const HISTORY = 1000;
const HISTORY_ON_JOIN = 50;

class Room {
  constructor() {
    this.members = new Set();
    this.nicks = new Map(); // nick -> connections in the room
    this.history = []; // the last HISTORY events, oldest first
    this.lastId = 0;
  }
}

const rooms = new Map();
let connections = 0;

function send(ws, event) {
  ws.send(JSON.stringify(event));
}

function join(ws, name, nick, since) {
  let room = rooms.get(name);
  if (room === undefined) rooms.set(name, (room = new Room()));
  room.members.add(ws);
  room.nicks.set(nick, (room.nicks.get(nick) || 0) + 1);
  const history = Number.isInteger(since)
    ? room.history.filter((m) => m.id > since)
    : room.history.slice(-HISTORY_ON_JOIN);
  const members = [...room.nicks.keys()].sort();
  send(ws, { type: 'joined', room: name, members, history });
}

function say(name, nick, command) {
  const room = rooms.get(name);
  room.lastId += 1;
  // key order as the other servers send it: the load generator reads "type" first, then "text"
  const event = { type: 'message', room: name, id: room.lastId, from: nick, text: command.text ?? '', ts: Date.now() };
  if ('ref' in command) event.ref = command.ref;
  room.history.push(event);
  if (room.history.length > HISTORY) room.history.shift();
  const data = Buffer.from(JSON.stringify(event));
  for (const member of room.members) {
    if (member.readyState === member.OPEN) member.send(data, { binary: false });
  }
}

function leave(ws, joined, nick) {
  for (const name of joined) {
    const room = rooms.get(name);
    room.members.delete(ws);
    const count = room.nicks.get(nick) - 1;
    if (count > 0) room.nicks.set(nick, count);
    else room.nicks.delete(nick);
  }
}

function handle(ws, request) {
  const nick = new URL(request.url, 'ws://peer').searchParams.get('nick') ?? 'anon';
  const joined = new Set();
  connections += 1;
  send(ws, { type: 'hello', nick, conn: `c${connections}` });
  ws.on('message', (raw) => {
    let command;
    try {
      command = JSON.parse(raw);
    } catch {
      command = null;
    }
    const kind = command && command.type;
    const name = command && command.room;
    if (typeof kind !== 'string' || name === undefined) {
      send(ws, { type: 'error', code: 'invalid_json', message: 'bad command' });
    } else if (kind === 'say' && joined.has(name)) {
      say(name, nick, command);
    } else if (kind === 'join' && !joined.has(name)) {
      joined.add(name);
      join(ws, name, nick, command.since);
    } else {
      send(ws, { type: 'error', code: 'unknown_type', message: 'not supported' });
    }
  });
  ws.on('close', () => leave(ws, joined, nick));
  ws.on('error', () => {}); // a reset peer: 'close' follows
}

function main() {
  const args = process.argv.slice(2);
  const at = args.indexOf('--bind');
  const bind = at >= 0 ? args[at + 1] : '127.0.0.1:0';
  const colon = bind.lastIndexOf(':');
  const host = bind.slice(0, colon).replace(/^\[|\]$/g, '');
  const port = Number(bind.slice(colon + 1));
  const server = new WebSocketServer({ host, port, perMessageDeflate: false, clientTracking: false });
  server.on('connection', handle);
  server.on('listening', () => {
    const address = server.address();
    process.stdout.write(`listening on ws://${address.address}:${address.port}/ws\n`);
  });
  const stop = () => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
