#!/usr/bin/env node
/*
 * The load generator of `python -m bench.run`: many WebSocket clients in one
 * Node process (the `ws` package), speaking the chat's JSON protocol
 * (docs/protocol.md): hello, join/joined, say/message. Clients offer no
 * compression unless `deflate` is true (then ws's default offer of
 * permessage-deflate, `client_max_window_bits`).
 *
 *     node bench/loadgen.js '{"scenario": "fanout", "target": {...}, ...}'
 *     node bench/loadgen.js config.json        (or the JSON on standard input)
 *
 * It prints ONE JSON object on standard output (progress goes to standard
 * error) and exits; every run stops by itself (`deadline` seconds at most).
 *
 * target: {"kind": "project", "http": "http://127.0.0.1:PORT"}  tokens from
 *             POST /api/session, one per distinct nick (bounded concurrency);
 *         {"kind": "peer", "ws": "ws://127.0.0.1:PORT/ws"}  the nick in ?nick=
 * serverPid: the process to measure (gunicorn's worker, or the peer):
 *             on-CPU time of its threads from /proc/PID/task/TID/schedstat (ns;
 *             user+system ticks of /proc/PID/stat where that is missing, and
 *             always as serverCpuStatSeconds), VmRSS from /proc/PID/status,
 *             read at the start and end of each measured phase; this process's
 *             CPU from process.cpuUsage(); what all other processes used
 *             meanwhile (`otherCpuPercent`, noise: /proc/PID/stat of each);
 *             from /proc/stat the interrupt time (`softirqCpuPercent`, mostly
 *             loopback TCP work) and steal (`stealCpuPercent`: the host's
 *             other guests took the CPU).
 *
 * Scenarios (each message's text carries "<seq>|<send time, ms>|" padded to
 * `textBytes`, so a receipt gives its latency without a clock of the server;
 * padded with "x", or with `text: "prose"` with words drawn from a small
 * vocabulary, as compressible as chat text):
 *   fanout    N members in one room, member 0 sends; at most `window` messages
 *             are in flight (a message is done once all N members have it);
 *             deliveries/s, latency p50/p99 from send to each receipt, bytes
 *             the members read from their sockets per delivery (frames as
 *             sent, compressed or not).
 *   rooms     `clients` in rooms of `roomSize`, each sending `rate` msg/s on a
 *             fixed schedule for `seconds`; delivered/expected, latency, and
 *             the p99 of a typical second (the median of each second's p99).
 *   idle      `clients` connections joined to rooms of `roomSize`, held;
 *             server RSS before and after. With `sourceAddresses`, client i
 *             connects from address i % length (a TCP connection needs its own
 *             port per source address, server address and port: ~28,000 on
 *             Linux); with `tolerant`, a connection that fails is counted,
 *             not fatal.
 *   connect   `clients` connections opened with `concurrency` at a time, each
 *             hello + join of its own room; server CPU per connection.
 *   recovery  a room of `messages` messages, then `trials` joins with
 *             since=0 one after another; time from join to the joined reply.
 *   compression  fanout, run by bench/run.py with `deflate` and prose texts.
 *   idle100k  idle, run by bench/run.py from several source addresses.
 */
'use strict';

const fs = require('fs');
const http = require('http');
const { monitorEventLoopDelay, performance } = require('perf_hooks');
const WebSocket = require('ws');

const now = () => performance.now(); // ms, monotonic
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => process.stderr.write(`loadgen: ${args.join(' ')}\n`);

let CLK_TCK = 100;

// -- measuring processes ------------------------------------------------------------------------

/** User + system CPU seconds of a process (all its threads), from /proc/PID/stat: clock ticks. */
function procCpu(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
}

/**
 * The same in nanoseconds: time on CPU of each of the process's threads, from
 * /proc/PID/task/TID/schedstat (null where the kernel does not keep it). A
 * clock tick is 10 ms: too coarse for a phase that costs the server 50 ms.
 */
function procCpuPrecise(pid) {
  try {
    let ns = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ', 1)[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
    return ns / 1e9;
  } catch {
    return null;
  }
}

/** Resident set size in bytes, from /proc/PID/status. */
function procRss(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

/**
 * CPU seconds of the whole machine (all cores), from /proc/stat: interrupts
 * (mostly softirq: on loopback, the kernel's TCP work) and steal (a virtual
 * machine waiting for its host's other guests).
 */
function machineCpu() {
  const line = fs.readFileSync('/proc/stat', 'latin1').split('\n', 1)[0];
  const [, , , , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return { irq: (irq + softirq) / CLK_TCK, steal: steal / CLK_TCK };
}

/** CPU ticks of every other process (kernel threads included), by PID. */
function otherProcesses(exclude) {
  const ticks = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || exclude.has(Number(name))) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'latin1');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks.set(name, Number(fields[11]) + Number(fields[12]));
    } catch {
      // gone meanwhile
    }
  }
  return ticks;
}

/** CPU seconds other processes used between two otherProcesses() readings, and the three busiest. */
function otherCpu(before, after) {
  let ticks = 0;
  const busiest = [];
  for (const [pid, t] of after) {
    const used = t - (before.get(pid) || 0);
    ticks += used;
    if (used > 0) busiest.push([pid, used]);
  }
  busiest.sort((a, b) => b[1] - a[1]);
  const top = busiest.slice(0, 3).map(([pid, used]) => {
    let name = '?';
    try {
      name = fs.readFileSync(`/proc/${pid}/comm`, 'latin1').trim();
    } catch {
      // gone meanwhile
    }
    return { pid: Number(pid), name, cpuSeconds: used / CLK_TCK };
  });
  return { seconds: ticks / CLK_TCK, top };
}

function selfCpu() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/**
 * A full garbage collection now, before a measured phase (node runs with --expose-gc, see
 * NODE_FLAGS in run.py): what setting up left behind is not collected in the middle of the
 * phase, where V8's mark-compact stops this process for 5 to 20 ms and every message in
 * flight would seem that much late, whichever server is measured.
 */
function collectGarbage() {
  if (typeof global.gc === 'function') global.gc();
}

/** Wall time, the server's CPU and this process's CPU over one phase. */
class Meter {
  constructor(pid) {
    this.pid = pid;
    this.t0 = now();
    this.server0 = procCpu(pid);
    this.precise0 = procCpuPrecise(pid);
    this.self0 = selfCpu();
    this.machine0 = machineCpu();
    this.exclude = new Set([pid, process.pid]);
    this.others0 = otherProcesses(this.exclude);
    // how late this process's event loop ran: a stalled client adds that to every latency
    this.loop = monitorEventLoopDelay({ resolution: 1 });
    this.loop.enable();
  }

  stop() {
    const seconds = (now() - this.t0) / 1000;
    const statCpu = procCpu(this.pid) - this.server0;
    const precise = procCpuPrecise(this.pid);
    // the precise figure when there is one; /proc/PID/stat's ticks otherwise
    const serverCpu = precise !== null && this.precise0 !== null ? precise - this.precise0 : statCpu;
    const loadgenCpu = selfCpu() - this.self0;
    const machine = machineCpu();
    const others = otherCpu(this.others0, otherProcesses(this.exclude)); // noise in the figures
    this.loop.disable();
    const loopMs = (ns) => Math.max(0, ns / 1e6 - 1); // less the 1 ms timer the monitor uses
    return {
      seconds,
      serverCpuSeconds: serverCpu,
      serverCpuStatSeconds: statCpu,
      serverCpuPercent: (100 * serverCpu) / seconds,
      loadgenCpuSeconds: loadgenCpu,
      loadgenCpuPercent: (100 * loadgenCpu) / seconds,
      otherCpuPercent: (100 * others.seconds) / seconds,
      otherBusiest: others.top,
      softirqCpuPercent: (100 * (machine.irq - this.machine0.irq)) / seconds,
      stealCpuPercent: (100 * (machine.steal - this.machine0.steal)) / seconds,
      loadgenLoopDelayMs: { p99: loopMs(this.loop.percentile(99)), max: loopMs(this.loop.max) },
    };
  }
}

/** Latency samples in ms, kept in a typed array (bounded). */
class Samples {
  constructor(capacity) {
    this.values = new Float64Array(capacity);
    this.count = 0;
    this.dropped = 0;
  }

  add(value) {
    if (this.count < this.values.length) this.values[this.count++] = value;
    else this.dropped++;
  }

  summary() {
    const sorted = this.values.subarray(0, this.count).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    return { samples: this.count, dropped: this.dropped, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) };
  }
}

// -- the chat protocol, fast paths ----------------------------------------------------------------

const MESSAGE_PREFIX = Buffer.from('{"type":"message"');
const TEXT_MARK = Buffer.from('"text":"');
const PAD = 'x'.repeat(4096);
const parsed = { seq: 0, t: 0 };

function isMessage(buf) {
  return buf.length > MESSAGE_PREFIX.length && buf.compare(MESSAGE_PREFIX, 0, MESSAGE_PREFIX.length, 0, MESSAGE_PREFIX.length) === 0;
}

/** Read "<seq>|<ms>|" from a message's text into `parsed`, without JSON.parse. */
function parseText(buf) {
  let i = buf.indexOf(TEXT_MARK, MESSAGE_PREFIX.length);
  if (i < 0) return false;
  i += TEXT_MARK.length;
  let c;
  let seq = 0;
  while ((c = buf[i++]) !== 0x7c) {
    if (c === undefined) return false;
    seq = seq * 10 + (c - 48);
  }
  let t = 0;
  while ((c = buf[i++]) !== 0x7c && c !== 0x2e) {
    if (c === undefined) return false;
    t = t * 10 + (c - 48);
  }
  if (c === 0x2e) {
    let scale = 0.1;
    while ((c = buf[i++]) !== 0x7c) {
      if (c === undefined) return false;
      t += (c - 48) * scale;
      scale /= 10;
    }
  }
  parsed.seq = seq;
  parsed.t = t;
  return true;
}

/** What pads a message's text to `textBytes`: "x" by default; prose (config `text: "prose"`) to be compressed. */
let padding = (seq, bytes) => PAD.slice(0, bytes);

// Common words of a chat; a message is a random draw from them (seeded by its seq), so it
// compresses about as well as chat text does and no two messages are alike.
const WORDS = (
  'the be to of and a in that have I it for not on with he as you do at this but his by from they we say her ' +
  'she or an will my one all would there their what so up out if about who get which go me when make can like ' +
  'time no just him know take people into year your good some could them see other than then now look only come ' +
  'its over think also back after use two how our work first well way even new want because any these give day ' +
  'most us is was are were been has had did said got meeting tomorrow deploy build test fixed thanks sure lunch'
).split(' ');

function prose(seq, bytes) {
  let x = (seq + 1) * 2654435761;
  let text = '';
  while (text.length < bytes) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    text += `${WORDS[(x >>> 0) % WORDS.length]}${(x & 15) === 0 ? '. ' : ' '}`;
  }
  return text.slice(0, bytes);
}

function sayFrame(room, seq, textBytes) {
  const head = `${seq}|${now().toFixed(3)}|`;
  const text = head.length >= textBytes ? head : head + padding(seq, textBytes - head.length);
  return `{"type":"say","room":"${room}","text":"${text}"}`;
}

// -- clients ------------------------------------------------------------------------------------

const errors = { connect: 0, closed: 0, closeCodes: {}, serverErrors: {} };
/** Whether clients offer permessage-deflate (config `deflate`). */
let offerDeflate = false;
/** What a scenario does with each `message` a client receives: (client, buffer) => void. */
let onChat = () => {};

class Client {
  constructor(index, url, localAddress) {
    this.index = index;
    this.url = url;
    this.localAddress = localAddress;
    this.ws = null;
    this.waiter = null;
    this.done = false; // closed on purpose
    this.extensions = null; // the server's Sec-WebSocket-Extensions ("" for none)
  }

  /** Connect and wait for hello. */
  open(timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, {
        perMessageDeflate: offerDeflate,
        skipUTF8Validation: true,
        handshakeTimeout: timeoutMs,
        maxPayload: 64 * 1024 * 1024,
        localAddress: this.localAddress,
      });
      this.ws = ws;
      this.waiter = { type: 'hello', resolve, reject };
      ws.on('upgrade', (response) => {
        this.extensions = response.headers['sec-websocket-extensions'] || '';
      });
      ws.on('message', (data) => this.onData(data));
      ws.on('error', (error) => {
        errors.connect++;
        this.fail(error);
      });
      ws.on('close', (code) => {
        if (!this.done) {
          errors.closed++;
          errors.closeCodes[code] = (errors.closeCodes[code] || 0) + 1;
        }
        this.fail(new Error(`closed with ${code}`));
      });
    });
  }

  fail(error) {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      waiter.reject(error);
    }
  }

  onData(buf) {
    if (isMessage(buf)) {
      onChat(this, buf);
      return;
    }
    const at = now();
    const event = JSON.parse(buf);
    if (event.type === 'error') errors.serverErrors[event.code] = (errors.serverErrors[event.code] || 0) + 1;
    const waiter = this.waiter;
    if (waiter && (event.type === waiter.type || event.type === 'error')) {
      this.waiter = null;
      if (event.type === 'error') waiter.reject(new Error(`server error ${event.code}: ${event.message}`));
      else waiter.resolve({ event, at, bytes: buf.length });
    }
  }

  /** Send a command and wait for the reply of `type`: {event, at (receipt time), bytes}. */
  request(command, type) {
    return new Promise((resolve, reject) => {
      this.waiter = { type, resolve, reject };
      this.ws.send(JSON.stringify(command));
    });
  }

  close() {
    this.done = true;
    if (this.ws) this.ws.terminate();
  }

  /** Bytes read from this client's socket so far (frames as they came, compressed or not). */
  bytesRead() {
    const socket = this.ws && this.ws._socket;
    return socket ? socket.bytesRead : 0;
  }
}

/** Run fn(0..count-1) with at most `concurrency` at a time. */
async function pool(count, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** POST /api/session for one nick; its ws_url. */
function postSession(base, nick, agent) {
  const body = JSON.stringify({ nick });
  return new Promise((resolve, reject) => {
    const request = http.request(
      `${base}/api/session`,
      { method: 'POST', agent, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if (response.statusCode !== 200) reject(new Error(`POST /api/session ${nick}: ${response.statusCode} ${text}`));
          else resolve(JSON.parse(text).ws_url);
        });
      },
    );
    request.setTimeout(30000, () => request.destroy(new Error('POST /api/session timed out')));
    request.on('error', reject);
    request.end(body);
  });
}

/** A WebSocket URL for each nick: sessions from the project, ?nick= for a peer. */
async function urlsFor(target, nicks, concurrency) {
  if (target.kind !== 'project') return nicks.map((nick) => `${target.ws}?nick=${encodeURIComponent(nick)}`);
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const urls = new Array(nicks.length);
  await pool(nicks.length, concurrency, async (i) => {
    urls[i] = await postSession(target.http, nicks[i], agent);
  });
  agent.destroy();
  return urls;
}

/**
 * Open `count` clients (url(i), from localAddress(i) if given) and join each to room(i);
 * connection latencies in `samples` if given. With `failed` (an array), a client that
 * cannot connect or join is closed and its error kept there instead of failing them all.
 */
async function connectAll(count, url, room, { concurrency, timeoutMs, samples, localAddress, failed }) {
  const clients = new Array(count);
  await pool(count, concurrency, async (i) => {
    const t0 = now();
    const client = (clients[i] = new Client(i, url(i), localAddress && localAddress(i)));
    try {
      await client.open(timeoutMs);
      const { at } = await client.request({ type: 'join', room: room(i) }, 'joined');
      if (samples) samples.add(at - t0);
    } catch (error) {
      if (!failed) throw error;
      if (failed.length < 5) log(`client ${i}: ${error.message}`);
      failed.push(String(error.message));
      client.close();
    }
  });
  return clients;
}

async function waitUntil(predicate, timeoutMs, stepMs = 5) {
  const deadline = now() + timeoutMs;
  while (!predicate()) {
    if (now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

// -- scenarios ----------------------------------------------------------------------------------

async function fanout(config) {
  const { target, serverPid, members: n, textBytes = 64 } = config;
  const window = config.window || Math.max(3, Math.min(50, Math.ceil(5000 / n)));
  if (config.text === 'prose') padding = prose;
  const room = 'fanout';
  // One session for every member (one nick in many tabs, as the protocol allows): joining
  // costs O(N) instead of a presence event to every earlier member, O(N²).
  const [url] = await urlsFor(target, ['fan'], 1);
  const t = now();
  const clients = await connectAll(n, () => url, () => room, { concurrency: 64, timeoutMs: 30000 });
  const connectSeconds = (now() - t) / 1000;
  log(`fanout: ${n} members joined in ${connectSeconds.toFixed(1)} s`);
  const sender = clients[0];
  const RING = 1 << 12;
  const counts = new Int32Array(RING);
  const samples = new Samples(4_000_000);
  let seq = 0;
  let inflight = 0;
  let delivered = 0;
  let measuring = false;
  let stopping = false;
  // `rate` (messages per second from the sender) paces the load: every server then delivers the
  // same number per second, so its CPU per delivery compares at equal load; without it the window
  // alone limits the sender, and the fastest reader sets the pace
  const rate = config.rate || 0;
  const pacedFrom = now();
  const pump = () => {
    const due = rate ? Math.floor(((now() - pacedFrom) * rate) / 1000) + 1 : Infinity;
    while (inflight < window && !stopping && seq < due) {
      inflight++;
      sender.ws.send(sayFrame(room, seq++, textBytes));
    }
  };
  const pacer = rate ? setInterval(pump, 2) : null;
  onChat = (client, buf) => {
    if (!parseText(buf)) return;
    delivered++;
    if (measuring) samples.add(now() - parsed.t);
    const slot = parsed.seq & (RING - 1);
    if (++counts[slot] === n) {
      counts[slot] = 0;
      inflight--;
      pump();
    }
  };
  pump();
  await sleep(config.warmup * 1000);
  collectGarbage();
  const meter = new Meter(serverPid);
  log(`${config.scenario}: measuring`); // bench.profile starts sampling here
  const wireBytes = () => clients.reduce((sum, client) => sum + client.bytesRead(), 0);
  const delivered0 = delivered;
  const sent0 = seq;
  const wire0 = wireBytes();
  measuring = true;
  await sleep(config.seconds * 1000);
  measuring = false;
  const phase = meter.stop();
  const deliveries = delivered - delivered0;
  const messages = seq - sent0;
  const wire = wireBytes() - wire0;
  stopping = true;
  if (pacer !== null) clearInterval(pacer);
  const drained = await waitUntil(() => inflight === 0, 10000);
  for (const client of clients) client.close();
  return {
    members: n,
    window,
    rate,
    textBytes,
    connectSeconds,
    ...phase,
    messagesSent: messages,
    deliveries,
    deliveriesPerSecond: deliveries / phase.seconds,
    serverCpuUsPerDelivery: (1e6 * phase.serverCpuSeconds) / deliveries,
    wireBytesPerDelivery: wire / deliveries,
    // what the server agreed to ("" for no extension), from the sender and the last member
    extensions: [sender.extensions, clients[n - 1].extensions],
    latencyMs: samples.summary(),
    drained,
  };
}

async function rooms(config) {
  const { target, serverPid, clients: n, roomSize, rate, textBytes = 64 } = config;
  const nicks = Array.from({ length: n }, (_, i) => `r${i}`);
  let t = now();
  const urls = await urlsFor(target, nicks, 16);
  const sessionSeconds = (now() - t) / 1000;
  t = now();
  const roomOf = (i) => `room-${Math.floor(i / roomSize)}`;
  const clients = await connectAll(n, (i) => urls[i], roomOf, { concurrency: 64, timeoutMs: 30000 });
  const connectSeconds = (now() - t) / 1000;
  log(`rooms: ${n} clients joined in ${connectSeconds.toFixed(1)} s`);
  await sleep(500);
  const samples = new Samples(4_000_000);
  // the same latencies by the second they were sent in: a pause of the whole machine
  // (tens of ms, now and then, on a virtual machine) spoils one second, not all of them
  const perSecond = Array.from({ length: Math.ceil(config.seconds) }, () => new Samples(n * rate * 2 * roomSize));
  const warmup = (config.warmup ?? 0) * 1000;
  let start = Infinity; // the measured phase: messages sent from then on, for config.seconds
  let delivered = 0;
  onChat = (client, buf) => {
    if (!parseText(buf) || parsed.t < start) return; // sent during the warm-up
    delivered++;
    const latency = now() - parsed.t;
    samples.add(latency);
    const second = perSecond[Math.floor((parsed.t - start) / 1000)];
    if (second) second.add(latency);
  };
  // The same traffic during the warm-up as after (the first messages of each room and
  // client pay for what is set up once), then collect the garbage before measuring.
  const period = 1000 / rate; // each client sends every `period` ms; send k is client k % n at k/n periods
  const traffic = async (ms, count) => {
    let sent = 0;
    let lag = 0;
    const begin = now();
    await new Promise((resolve) => {
      const tick = () => {
        const elapsed = now() - begin;
        const due = Math.min(count ?? Infinity, Math.floor((elapsed * n) / period) + 1);
        for (; sent < due && elapsed < ms; sent++) {
          lag = Math.max(lag, elapsed - (sent * period) / n);
          const client = clients[sent % n];
          client.ws.send(sayFrame(roomOf(client.index), sent, textBytes));
        }
        if (sent >= count || elapsed >= ms) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    return lag;
  };
  if (warmup > 0) await traffic(warmup);
  await sleep(50); // the warm-up's last deliveries
  const total = Math.round(n * rate * config.seconds);
  collectGarbage();
  const meter = new Meter(serverPid);
  log(`${config.scenario}: measuring`); // bench.profile starts sampling here
  start = now();
  const maxLagMs = await traffic(Infinity, total);
  const expected = total * roomSize;
  await waitUntil(() => delivered >= expected, config.drain * 1000);
  const phase = meter.stop();
  for (const client of clients) client.close();
  return {
    clients: n,
    roomSize,
    rate,
    textBytes,
    sessionSeconds,
    connectSeconds,
    trafficSeconds: config.seconds,
    ...phase,
    messagesSent: total,
    expected,
    delivered,
    deliveredRatio: delivered / expected,
    deliveriesPerSecond: delivered / phase.seconds,
    serverCpuUsPerDelivery: (1e6 * phase.serverCpuSeconds) / delivered,
    maxSendLagMs: maxLagMs,
    latencyMs: samples.summary(),
    secondP99Ms: medianOf(perSecond.map((second) => second.summary().p99)),
  };
}

/** The median of the numbers in `values` (nulls left out; the lower middle of an even count). */
function medianOf(values) {
  const sorted = values.filter((v) => v !== null).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : null;
}

async function idle(config) {
  const { target, serverPid, clients: n, roomSize } = config;
  const nicks = Array.from({ length: n }, (_, i) => `i${i}`);
  const t = now();
  const urls = await urlsFor(target, nicks, 16);
  const sessionSeconds = (now() - t) / 1000;
  log(`idle: ${n} sessions in ${sessionSeconds.toFixed(1)} s`);
  await sleep(300);
  const rssBefore = procRss(serverPid);
  const sources = config.sourceAddresses || [];
  const failed = config.tolerant ? [] : undefined;
  collectGarbage();
  const meter = new Meter(serverPid);
  log(`${config.scenario}: measuring`); // bench.profile starts sampling here
  const clients = await connectAll(
    n,
    (i) => urls[i],
    (i) => `idle-${Math.floor(i / roomSize)}`,
    {
      concurrency: 64,
      timeoutMs: 60000,
      localAddress: sources.length ? (i) => sources[i % sources.length] : null,
      failed,
    },
  );
  const phase = meter.stop();
  log(`idle: ${n} clients joined in ${phase.seconds.toFixed(1)} s`);
  await sleep(config.hold * 1000);
  const rssAfter = procRss(serverPid);
  const open = clients.filter((c) => c.ws.readyState === WebSocket.OPEN).length;
  const loadgenRss = process.memoryUsage().rss;
  for (const client of clients) client.close();
  return {
    clients: n,
    open,
    failed: failed ? failed.length : 0,
    failures: failed ? [...new Set(failed)].slice(0, 5) : [],
    sourceAddresses: sources,
    roomSize,
    sessionSeconds,
    connectSeconds: phase.seconds,
    connectionsPerSecond: (n - (failed ? failed.length : 0)) / phase.seconds,
    connectServerCpuSeconds: phase.serverCpuSeconds,
    holdSeconds: config.hold,
    rssBefore,
    rssAfter,
    rssBytesPerConnection: (rssAfter - rssBefore) / n,
    loadgenRss,
  };
}

async function connect(config) {
  const { target, serverPid, clients: n, concurrency } = config;
  const nicks = Array.from({ length: n }, (_, i) => `c${i}`);
  const sessions = new Meter(serverPid);
  const urls = await urlsFor(target, nicks, 16);
  const sessionPhase = sessions.stop();
  await sleep(300);
  const samples = new Samples(n);
  collectGarbage();
  const meter = new Meter(serverPid);
  log(`${config.scenario}: measuring`); // bench.profile starts sampling here
  const clients = await connectAll(n, (i) => urls[i], (i) => `own-${i}`, { concurrency, timeoutMs: 30000, samples });
  const phase = meter.stop();
  for (const client of clients) client.close();
  return {
    clients: n,
    concurrency,
    ...phase,
    connectionsPerSecond: n / phase.seconds,
    serverCpuUsPerConnection: (1e6 * phase.serverCpuSeconds) / n,
    latencyMs: samples.summary(),
    sessionSeconds: sessionPhase.seconds,
    serverCpuUsPerSession: target.kind === 'project' ? (1e6 * sessionPhase.serverCpuSeconds) / n : null,
  };
}

async function recovery(config) {
  const { target, serverPid, messages, trials, textBytes = 64 } = config;
  const room = 'recovery';
  const [url] = await urlsFor(target, ['rec'], 1);
  const [filler] = await connectAll(1, () => url, () => room, { concurrency: 1, timeoutMs: 30000 });
  let acked = 0;
  let sent = 0;
  onChat = () => {
    acked++;
    while (sent < messages && sent - acked < 50) filler.ws.send(sayFrame(room, sent++, textBytes));
  };
  while (sent < messages && sent < 50) filler.ws.send(sayFrame(room, sent++, textBytes));
  if (!(await waitUntil(() => acked >= messages, 60000))) throw new Error(`only ${acked} of ${messages} stored`);
  onChat = () => {};
  const joiners = new Array(trials);
  await pool(trials, 10, async (i) => {
    joiners[i] = new Client(i, url);
    await joiners[i].open(30000);
  });
  await sleep(300);
  const samples = new Samples(trials);
  let bytes = 0;
  let replayed = 0;
  collectGarbage();
  const meter = new Meter(serverPid);
  log(`${config.scenario}: measuring`); // bench.profile starts sampling here
  for (const joiner of joiners) {
    const t0 = now();
    const reply = await joiner.request({ type: 'join', room, since: 0 }, 'joined');
    samples.add(reply.at - t0);
    bytes = reply.bytes;
    replayed = reply.event.history.length;
  }
  const phase = meter.stop();
  for (const client of [filler, ...joiners]) client.close();
  if (replayed !== messages) throw new Error(`joined replayed ${replayed} messages, expected ${messages}`);
  return {
    messages,
    trials,
    replayed,
    joinedBytes: bytes,
    ...phase,
    serverCpuMsPerReplay: (1e3 * phase.serverCpuSeconds) / trials,
    latencyMs: samples.summary(),
  };
}

// compression is fanout with `deflate` and prose texts, idle100k is idle from several source
// addresses (run.py sets both): the names only tell the runs apart
const SCENARIOS = { fanout, rooms, idle, connect, recovery, compression: fanout, idle100k: idle };

// -- main ---------------------------------------------------------------------------------------

function readConfig() {
  const arg = process.argv[2];
  if (arg && arg.trim().startsWith('{')) return JSON.parse(arg);
  return JSON.parse(fs.readFileSync(arg && arg !== '-' ? arg : 0, 'utf8'));
}

async function main() {
  const config = readConfig();
  CLK_TCK = config.clkTck || 100;
  offerDeflate = Boolean(config.deflate);
  const run = SCENARIOS[config.scenario];
  if (!run) throw new Error(`unknown scenario ${config.scenario}; one of ${Object.keys(SCENARIOS)}`);
  const deadline = setTimeout(() => {
    process.stdout.write(`${JSON.stringify({ scenario: config.scenario, error: `deadline of ${config.deadline} s passed`, errors })}\n`);
    process.exit(3);
  }, (config.deadline || 120) * 1000);
  deadline.unref();
  const started = selfCpu();
  const result = await run(config);
  result.loadgenTotalCpuSeconds = selfCpu() - started;
  result.errors = errors;
  process.stdout.write(`${JSON.stringify({ scenario: config.scenario, target: config.target.kind, ...result })}\n`);
  process.exit(0);
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ error: String(error && error.stack ? error.stack : error), errors })}\n`);
  process.exit(1);
});
