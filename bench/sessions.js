#!/usr/bin/env node
/*
 * The client of the `sessions` scenario (bench/sessions.py): N browsers asking
 * for a session at once, then connecting, as after a restart or an outage.
 *
 *     node bench/sessions.js '{"http": "http://127.0.0.1:PORT", "clients": 10000, "concurrency": 1000, ...}'
 *
 * `concurrency` clients at a time; each, on a fresh TCP connection (agent:
 * false, as a browser that has none open yet), sends `POST /api/session` with
 * a nick of its own, then opens the WebSocket at the `ws_url` it got (the
 * `ws` package, compression off, the page's Origin) and waits for `hello`. It
 * keeps that WebSocket open until every client is done. A 503 or 429 with
 * Retry-After (from the API, or refusing the handshake) is honoured as the
 * browser does: wait Retry-After seconds × (1 + up to 0.5 at random), try
 * again, at most `retries` times. A network error (reset, refused, timeout)
 * is a failure and is counted by kind: there must be none.
 *
 * serverPid (gunicorn's worker) and proxyPids (nginx's workers): on-CPU time
 * of their threads, /proc/PID/task/TID/schedstat (ns; user+system ticks of
 * /proc/PID/task/TID/stat where the kernel keeps no schedstat), read before
 * the first client starts and once the last is done, before any closes.
 *
 * It prints ONE JSON object on standard output (progress on standard error)
 * and exits; it stops by itself after `deadline` seconds.
 */
'use strict';

const fs = require('fs');
const http = require('http');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const now = () => performance.now(); // ms, monotonic
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => process.stderr.write(`sessions: ${args.join(' ')}\n`);

const config = JSON.parse(process.argv[2]);
const {
  http: httpBase,
  origin = httpBase,
  clients: total = 10000,
  concurrency = 1000,
  retries = 5, // 503/429s honoured per step before a client gives up
  jitter = 0.5, // Retry-After × (1 + up to this much)
  timeoutMs = 30000, // a request, or a WebSocket until hello
  serverPid = null,
  proxyPids = [],
  clkTck = 100,
  deadline = 600,
} = config;
const base = new URL(httpBase);

// -- CPU of the measured processes ---------------------------------------------------------------

/** On-CPU seconds of all of a process's threads: schedstat (ns), or user+system ticks of each thread's stat. */
function processCpu(pid) {
  let seconds = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      seconds += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ', 1)[0]) / 1e9;
    } catch {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        seconds += (Number(fields[11]) + Number(fields[12])) / clkTck;
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return seconds;
}

function cpuOf(pids) {
  return pids.reduce((sum, pid) => sum + processCpu(pid), 0);
}

// -- one client ----------------------------------------------------------------------------------

const stats = {
  sessions: 0, // POST /api/session answered 200 (in the end)
  open: 0, // WebSockets that saw hello
  honoured: {}, // "session 503": n, "websocket 429": n, …
  failures: {}, // why a client did not get its WebSocket: "session ECONNRESET", "websocket gave up after 5 × 503", …
  closedEarly: 0, // open WebSockets closed before the end
  attemptMs: [], // each POST answered, from sending to the whole response
  successMs: [], // from a client's first POST to its 200, waits included
  helloMs: [], // from opening the WebSocket (its last attempt) to hello
};
const sockets = [];
let finished = false;

function count(table, key) {
  table[key] = (table[key] || 0) + 1;
}

/** The wait a 503 or 429 asks for (ms, jitter added), or null if it names none. */
function retryDelay(headers) {
  const seconds = Number(headers['retry-after']);
  if (!headers['retry-after'] || !Number.isFinite(seconds) || seconds < 0) return null;
  return seconds * 1000 * (1 + Math.random() * jitter);
}

/** One POST /api/session on a connection of its own: {status, headers, body} or {error}. */
function post(nick) {
  return new Promise((resolve) => {
    const body = JSON.stringify({ nick });
    const request = http.request(
      {
        host: base.hostname,
        port: base.port,
        path: '/api/session',
        method: 'POST',
        agent: false,
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          origin,
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks).toString() }),
        );
        response.on('error', (error) => resolve({ error: error.code || error.message }));
      },
    );
    request.on('error', (error) => resolve({ error: error.code || error.message }));
    request.setTimeout(timeoutMs, () => request.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
    request.end(body);
  });
}

/** The WebSocket until hello: {ws} or {status, headers} (refused) or {error}. */
function connect(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, origin, handshakeTimeout: timeoutMs });
    let settled = false;
    const settle = (outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      settle({ error: 'timeout' });
      ws.terminate();
    }, timeoutMs);
    ws.once('message', (data) => {
      let type = null;
      try {
        type = JSON.parse(data).type;
      } catch {
        // not JSON: reported below
      }
      if (type === 'hello') {
        settle({ ws });
      } else {
        settle({ error: `first event ${type}` });
        ws.terminate();
      }
    });
    ws.on('error', (error) => settle({ error: error.code || error.message }));
    ws.once('unexpected-response', (request, response) => {
      settle({ status: response.statusCode, headers: response.headers });
      request.destroy();
    });
    ws.once('close', (code) => settle({ error: `closed ${code}` }));
  });
}

/** Run `attempt` until it succeeds, honouring 503/429 + Retry-After up to `retries` times; a failure's kind. */
async function withRetries(step, attempt) {
  for (let honoured = 0; ; honoured++) {
    const outcome = await attempt();
    if (outcome.error) return { failure: `${step} ${outcome.error}` };
    if (outcome.status === undefined || outcome.status === 200) return outcome;
    const delay = [503, 429].includes(outcome.status) ? retryDelay(outcome.headers) : null;
    if (delay === null) return { failure: `${step} HTTP ${outcome.status}` };
    if (honoured >= retries) return { failure: `${step} gave up after ${retries + 1} × ${outcome.status}` };
    count(stats.honoured, `${step} ${outcome.status}`);
    await sleep(delay);
  }
}

async function client(index) {
  const firstPost = now();
  const session = await withRetries('session', async () => {
    const started = now();
    const answer = await post(`s${index}`);
    if (!answer.error) stats.attemptMs.push(now() - started);
    return answer;
  });
  if (session.failure) return count(stats.failures, session.failure);
  stats.successMs.push(now() - firstPost);
  stats.sessions++;
  let url;
  try {
    url = JSON.parse(session.body).ws_url;
  } catch {
    return count(stats.failures, 'session answer not JSON');
  }
  let opened = 0;
  const socket = await withRetries('websocket', async () => {
    opened = now();
    return connect(url);
  });
  if (socket.failure) return count(stats.failures, socket.failure);
  stats.helloMs.push(now() - opened);
  stats.open++;
  sockets.push(socket.ws);
  socket.ws.on('error', () => {}); // the close follows
  socket.ws.once('close', () => {
    if (!finished) stats.closedEarly++;
  });
}

// -- the run -------------------------------------------------------------------------------------

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

function spread(values) {
  const sorted = Float64Array.from(values).sort();
  return { count: sorted.length, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: percentile(sorted, 1) };
}

async function main() {
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ error: `not done after ${deadline} s` }) + '\n');
    process.exit(1);
  }, deadline * 1000);
  const pids = serverPid ? [serverPid] : [];
  const cpuBefore = { server: cpuOf(pids), proxy: cpuOf(proxyPids) };
  const ownBefore = process.cpuUsage();
  const started = now();
  let next = 0;
  const progress = setInterval(() => log(`${next} started, ${stats.open} open`), 2000);
  await Promise.all(
    Array.from({ length: Math.min(concurrency, total) }, async () => {
      while (next < total) await client(next++);
    }),
  );
  const elapsed = (now() - started) / 1000;
  const cpu = { server: cpuOf(pids) - cpuBefore.server, proxy: cpuOf(proxyPids) - cpuBefore.proxy };
  const own = process.cpuUsage(ownBefore);
  clearInterval(progress);
  finished = true;
  const failed = Object.values(stats.failures).reduce((a, b) => a + b, 0);
  const networkErrors = {};
  for (const [kind, n] of Object.entries(stats.failures)) {
    if (!/ (HTTP \d+|gave up|first event|answer not JSON)/.test(kind)) networkErrors[kind] = n;
  }
  const result = {
    scenario: 'sessions',
    clients: total,
    concurrency,
    sessions: stats.sessions,
    sessionRatio: stats.sessions / total,
    open: stats.open,
    openRatio: stats.open / total,
    honoured: stats.honoured,
    honouredTotal: Object.values(stats.honoured).reduce((a, b) => a + b, 0),
    failures: stats.failures,
    failed,
    networkErrors,
    networkErrorsTotal: Object.values(networkErrors).reduce((a, b) => a + b, 0),
    closedEarly: stats.closedEarly,
    attemptMs: spread(stats.attemptMs),
    successMs: spread(stats.successMs),
    helloMs: spread(stats.helloMs),
    seconds: elapsed,
    connectionsPerSecond: stats.open / elapsed,
    serverCpuSeconds: serverPid ? cpu.server : null,
    serverCpuUsPerClient: serverPid ? (cpu.server * 1e6) / total : null,
    proxyCpuUsPerClient: proxyPids.length ? (cpu.proxy * 1e6) / total : null,
    loadgenCpuPercent: ((own.user + own.system) / 1e4 / elapsed),
  };
  log(`done in ${elapsed.toFixed(1)} s: ${stats.open} of ${total} open, ${failed} failed; closing`);
  process.stdout.write(JSON.stringify(result) + '\n');
  for (const ws of sockets) ws.terminate();
  clearTimeout(timer);
  process.exit(0);
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }) + '\n');
  process.exit(1);
});
