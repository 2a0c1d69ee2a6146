// Drives sio-page.html in headless Chromium for TestSocketIOClientInABrowser
// (cmd/sidecar): socket.io-client v4's browser bundle, unchanged, on a page
// of another origin than the sidecar's, with its default transports.
// usage: node sio-page.mjs '<json config>'
//   {"chromium": "/usr/bin/chromium", "out": "<screenshot dir>",
//    "allowed": "<page URL: an origin in auth.origins>",
//    "denied": [{"name": "...", "url": "<page URL: an origin not in auth.origins>"}, ...]}
// Prints one JSON line per step, for the Go test to act on:
//   {"connected": {seen, transport, network}}  connected, and upgraded to WebSocket:
//                                              the test sends the page an event now
//   {"event": {event, args}}                   the first event the page got
//   {"ack": {args} | {timeout: true}}          the page's emit('typing', ..., ack)
//   {"denied": name, "seen": ..., "console": [..], "network": [..]}  per denied page
//   {"done": true, "screenshots": {...}}
// or {"error": "..."} and exits 1. Each wait is bounded (10 s).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), 'sidecar-chromium-'));
const screenshots = {};
const print = (m) => console.log(JSON.stringify(m));
const WAIT = 10000;
let context;
let page;

async function shot(p, name) {
  const path = join(cfg.out, name + '.png');
  await p.screenshot({ path });
  screenshots[name] = path;
}

// watch records what the browser itself did for the page's Socket.IO
// traffic: each request to /socket.io/ with its answer's status and CORS
// headers or its failure, each WebSocket, and the console's errors (where
// Chromium says why it blocked a response).
function watch(p) {
  const network = [];
  const consoleErrors = [];
  const entry = (req) => {
    const u = new URL(req.url());
    return { method: req.method(), transport: u.searchParams.get('transport'), sid: u.searchParams.get('sid') !== null, url: req.url() };
  };
  const pending = [];
  p.on('request', (req) => {
    if (!req.url().includes('/socket.io/')) return;
    const e = entry(req);
    e.origin = null;
    network.push(e);
    pending.push(req.allHeaders().then((h) => { e.origin = h.origin ?? null; }).catch(() => {}));
  });
  p.on('response', (res) => {
    const e = network.find((x) => x.url === res.url() && x.status === undefined && x.failure === undefined);
    if (!e) return;
    e.status = res.status();
    pending.push(res.allHeaders().then((h) => {
      e.allowOrigin = h['access-control-allow-origin'] ?? null;
      e.allowCredentials = h['access-control-allow-credentials'] ?? null;
    }).catch(() => {}));
  });
  p.on('requestfailed', (req) => {
    const e = network.find((x) => x.url === req.url() && x.failure === undefined);
    if (e) e.failure = req.failure()?.errorText ?? 'failed';
  });
  p.on('websocket', (ws) => {
    const u = new URL(ws.url());
    const e = { websocket: true, transport: u.searchParams.get('transport'), sid: u.searchParams.get('sid') !== null, url: ws.url() };
    network.push(e);
    ws.on('socketerror', (err) => { e.error = String(err); });
    ws.on('close', () => { e.closed = true; });
  });
  p.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  p.on('pageerror', (err) => consoleErrors.push('page error: ' + String(err)));
  return { network, consoleErrors, settle: () => Promise.all(pending) };
}

async function waitFor(p, what, fn, arg) {
  try {
    await p.waitForFunction(fn, arg, { timeout: WAIT });
  } catch {
    throw new Error(`${what}: not within ${WAIT} ms; the page saw ${JSON.stringify(await p.evaluate(() => window.seen).catch(() => null))}`);
  }
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
    viewport: { width: 1000, height: 600 },
  });
  page = context.pages()[0] ?? await context.newPage();
  const w = watch(page);

  // 1. Connect over long-polling, then the upgrade to WebSocket.
  await page.goto(cfg.allowed);
  await waitFor(page, 'connect, then the upgrade to websocket',
    () => window.seen.connected && window.socket.io.engine.transport.name === 'websocket');
  await w.settle();
  print({ connected: await page.evaluate(() => ({ ...window.seen, transport: window.socket.io.engine.transport.name })), network: w.network });

  // 2. The Go test sends the page's user an event through the API.
  await waitFor(page, 'the event sent through the API', () => window.seen.events.length > 0);
  print({ event: await page.evaluate(() => window.seen.events[0]) });

  // 3. An emit with an ack callback, over the WebSocket.
  print({ ack: await page.evaluate(() => window.emitWithAck('typing', { to: 'someone', isTyping: true }, 5000)) });
  await shot(page, 'socketio-connected');
  await w.settle();
  print({ network: w.network, console: w.consoleErrors, transport: await page.evaluate(() => window.socket.io.engine.transport.name) });
  await page.evaluate(() => window.socket.disconnect());

  // 4. Pages whose origin is not in auth.origins: a connect_error.
  for (const d of cfg.denied) {
    const p = await context.newPage();
    const dw = watch(p);
    await p.goto(d.url);
    await waitFor(p, `${d.name}: connect_error`, () => window.seen.connectErrors.length > 0);
    await p.waitForTimeout(200); // anything that would follow the error
    await dw.settle();
    const seen = await p.evaluate(() => window.seen);
    await shot(p, 'socketio-' + d.name);
    await p.evaluate(() => window.socket.disconnect());
    print({ denied: d.name, seen, console: dw.consoleErrors, network: dw.network });
    await p.close();
  }
  print({ done: true, screenshots });
} catch (err) {
  if (page && !page.isClosed()) await shot(page, 'socketio-failure').catch(() => {});
  print({ error: String(err.stack || err), screenshots });
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
