#!/usr/bin/env node
/*
 * The load generator of the `rolling` scenario (bench/rolling.py): many clients
 * of the chat (the `ws` package, compression off) in rooms, one sender per room,
 * through a rolling restart of gunicorn (SIGHUP to its master), reconnecting as
 * docs/protocol.md §5 asks and as static/chat.js does:
 *
 *   - close 1012 ("restarting retry=MS"): connect again after MS, plus up to 10 %;
 *   - any other close, or a failed attempt: full-jitter backoff (500 ms doubling, at most 30 s);
 *   - once back: join every room again with since (the last id seen) and epoch;
 *     a sender sends again, with the same ref, the message it had no ack for.
 *
 *     node bench/rolling.js '{"http": "http://127.0.0.1:PORT", "masterPid": N, "clients": 5000, ...}'
 *
 * It prints ONE JSON object on standard output (progress on standard error):
 * messages acknowledged and lost (an acknowledged message some member of its
 * room never saw, after resuming: must be 0), the 1012 closes and the
 * reconnections per 100 ms bucket from the SIGHUP on (the busiest bucket
 * against the mean over the span: a spread, not a spike), and the time until
 * every client was back in its room.
 */
'use strict';

const http = require('http');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => process.stderr.write(`rolling: ${args.join(' ')}\n`);

const RETRY_HINT = /(?:^| )retry=(\d+)(?: |$)/;
const HINT_JITTER = 0.1;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30000;

const config = JSON.parse(process.argv[2]);
const {
  http: httpBase,
  masterPid,
  clients: clientCount = 5000,
  roomSize = 10,
  rate = 1, // messages per second from each room's sender
  warmup = 2,
  drain = 10,
  deadline = 300,
} = config;

const stats = { closes1012: [], otherCloses: 0, failedAttempts: 0, reconnects: [], acked: [] };
let restartAt = null; // when the SIGHUP was sent (ms, this clock)

class Member {
  constructor(index, url, room, sender) {
    Object.assign(this, { index, url, room, sender });
    this.ws = null;
    this.joined = false;
    this.joinedOnce = false;
    this.lastId = 0;
    this.epoch = null;
    this.seen = new Set();
    this.attempt = 0;
    this.restarts = 0; // 1012s received
    this.back = true; // rejoined since the last 1012
    this.pending = null; // sender: {ref, text} not acknowledged yet
    this.sent = 0;
    this.readyResolve = null;
  }

  connect() {
    const ws = (this.ws = new WebSocket(this.url, { perMessageDeflate: false, skipUTF8Validation: true }));
    ws.on('message', (data) => this.receive(JSON.parse(data)));
    ws.on('error', () => {}); // a close follows
    ws.on('close', (code, reason) => this.closed(code, reason.toString()));
  }

  receive(event) {
    if (event.type === 'hello') {
      const join = { type: 'join', room: this.room };
      if (this.joinedOnce) {
        join.since = this.lastId;
        if (this.epoch) join.epoch = this.epoch;
      }
      this.ws.send(JSON.stringify(join));
    } else if (event.type === 'joined' && event.room === this.room) {
      if (event.reset) this.seen.clear();
      for (const entry of event.history || []) this.see(entry);
      if (typeof event.epoch === 'string') this.epoch = event.epoch;
      this.joined = this.joinedOnce = true;
      this.attempt = 0;
      if (!this.back) {
        this.back = true;
        stats.reconnects.push(now() - restartAt);
      }
      if (this.pending) this.say(this.pending); // not seen back before the close: the same ref again
      if (this.readyResolve) this.readyResolve();
    } else if (event.type === 'message' && event.room === this.room) {
      this.see(event);
    }
  }

  see(message) {
    this.seen.add(message.id);
    if (message.id > this.lastId) this.lastId = message.id;
    if (this.pending && message.ref === this.pending.ref) {
      stats.acked.push({ room: this.room, id: message.id });
      this.pending = null;
    }
  }

  say(message) {
    this.pending = message;
    this.ws.send(JSON.stringify({ type: 'say', room: this.room, text: message.text, ref: message.ref }));
  }

  tick() {
    if (!this.joined || this.pending || this.ws.readyState !== WebSocket.OPEN) return;
    this.sent += 1;
    this.say({ ref: `r${this.index}-${this.sent}`, text: `${this.room} ${this.sent}` });
  }

  closed(code, reason) {
    const wasOpen = this.joined;
    this.joined = false;
    let delay;
    const hint = code === 1012 ? RETRY_HINT.exec(reason) : null;
    if (hint) {
      stats.closes1012.push(now() - (restartAt ?? now()));
      this.restarts += 1;
      this.back = false;
      delay = Number(hint[1]) * (1 + Math.random() * HINT_JITTER);
    } else {
      if (wasOpen) stats.otherCloses += 1;
      else stats.failedAttempts += 1;
      delay = Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
      this.attempt += 1;
    }
    if (!stopping) setTimeout(() => this.connect(), delay);
  }
}

let stopping = false;

function postSession(nick, agent) {
  const body = JSON.stringify({ nick });
  return new Promise((resolve, reject) => {
    const request = http.request(
      `${httpBase}/api/session`,
      { method: 'POST', agent, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if (response.statusCode !== 200) reject(new Error(`POST /api/session: ${response.statusCode} ${text}`));
          else resolve(JSON.parse(text).ws_url);
        });
      },
    );
    request.setTimeout(30000, () => request.destroy(new Error('POST /api/session timed out')));
    request.on('error', reject);
    request.end(body);
  });
}

async function pool(count, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

async function waitUntil(predicate, timeoutMs) {
  const end = now() + timeoutMs;
  while (!predicate()) {
    if (now() > end) return false;
    await sleep(20);
  }
  return true;
}

/** Per 100 ms bucket from the first to the last event: the busiest, the mean, their ratio. */
function spread(times) {
  if (!times.length) return null;
  const first = Math.min(...times);
  const last = Math.max(...times);
  const counts = new Array(Math.floor((last - first) / 100) + 1).fill(0);
  for (const t of times) counts[Math.floor((t - first) / 100)] += 1;
  const mean = times.length / counts.length;
  const max = Math.max(...counts);
  return {
    count: times.length,
    firstSeconds: first / 1000,
    lastSeconds: last / 1000,
    buckets: counts.length,
    maxPerBucket: max,
    meanPerBucket: mean,
    maxOverMean: max / mean,
  };
}

async function main() {
  const members = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const started = now();
  const urls = new Array(clientCount);
  await pool(clientCount, 16, async (i) => {
    urls[i] = await postSession(`r${i}`, agent);
  });
  agent.destroy();
  log(`${clientCount} sessions in ${((now() - started) / 1000).toFixed(1)} s`);
  for (let i = 0; i < clientCount; i++) {
    members.push(new Member(i, urls[i], `roll-${Math.floor(i / roomSize)}`, i % roomSize === 0));
  }
  await pool(clientCount, 64, async (i) => {
    const member = members[i];
    await new Promise((resolve) => {
      member.readyResolve = resolve;
      member.connect();
    });
    member.readyResolve = null;
  });
  log(`${clientCount} clients joined ${Math.ceil(clientCount / roomSize)} rooms in ${((now() - started) / 1000).toFixed(1)} s`);

  const senders = members.filter((m) => m.sender);
  const timers = senders.map((m) => {
    const every = 1000 / rate;
    return setTimeout(() => {
      m.tick();
      m.timer = setInterval(() => m.tick(), every);
    }, Math.random() * every);
  });
  await sleep(warmup * 1000);

  restartAt = now();
  process.kill(masterPid, 'SIGHUP');
  log(`SIGHUP to gunicorn's master (${masterPid}): a rolling restart, the old workers drain over ${drain} s`);
  const allBack = await waitUntil(
    () => members.every((m) => m.restarts > 0 && m.back && m.joined),
    (drain + 60) * 1000,
  );
  const backAt = now();
  log(allBack ? `every client back in ${((backAt - restartAt) / 1000).toFixed(1)} s` : 'NOT every client came back');

  await sleep(2000); // still sending, on the new workers
  for (const [i, m] of senders.entries()) {
    clearTimeout(timers[i]);
    clearInterval(m.timer);
  }
  await waitUntil(() => senders.every((m) => !m.pending), 15000);
  await sleep(2000); // the last deliveries
  stopping = true;

  const byRoom = new Map();
  for (const m of members) {
    if (!byRoom.has(m.room)) byRoom.set(m.room, []);
    byRoom.get(m.room).push(m);
  }
  let lost = 0;
  let missingDeliveries = 0;
  for (const { room, id } of stats.acked) {
    const missing = byRoom.get(room).filter((m) => !m.seen.has(id)).length;
    missingDeliveries += missing;
    if (missing) lost += 1;
  }
  const unacked = senders.filter((m) => m.pending).length;
  for (const m of members) m.ws.terminate();

  const result = {
    scenario: 'rolling',
    clients: clientCount,
    rooms: byRoom.size,
    drainSeconds: drain,
    acked: stats.acked.length,
    lost,
    missingDeliveries,
    unackedAtEnd: unacked,
    allReconnected: allBack,
    allReconnectedSeconds: allBack ? (backAt - restartAt) / 1000 : null,
    notBack: members.filter((m) => !(m.restarts > 0 && m.back && m.joined)).length,
    closes1012: spread(stats.closes1012),
    reconnects: spread(stats.reconnects),
    otherCloses: stats.otherCloses,
    failedAttempts: stats.failedAttempts,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: `over the deadline of ${deadline} s` })}\n`);
  process.exit(1);
}, deadline * 1000).unref();

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ error: String(error && error.stack ? error.stack : error) })}\n`);
  process.exit(1);
});
