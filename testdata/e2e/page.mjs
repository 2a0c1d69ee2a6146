// Drives the example page (/socket-example.html) in headless Chromium, as a
// person would, for TestExamplePageInABrowser (cmd/sidecar).
// usage: node page.mjs '<json config>'
//   {"base": "http://127.0.0.1:port", "chromium": "/usr/bin/chromium",
//    "out": "<screenshot dir>", "webhookSecret": "whsec_...",
//    "userToken": "<prov-1, provider>", "adminToken": "<ops, admin>",
//    "badToken": "<signed with another secret>", "expiredToken": "...",
//    "mintCommand": "<the command the page must show>",
//    "u2Token": "<u2, whom the page watches>", "graceMs": <presence.grace in ms>}
// Each step checks what the page shows through the DOM and saves a
// screenshot of it. Prints one JSON line: {"ok": true, "screenshots":
// {...}, "facts": {...}}, or {"ok": false, "error": "..."} and exits 1.
import { chromium } from 'playwright-core';
import { Webhook } from 'standardwebhooks';
import WebSocket from 'ws';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), 'sidecar-chromium-'));
const screenshots = {};
const facts = {};
let context;
let page;
let u2;

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function shot(p, name, opts = {}) {
  const path = join(cfg.out, name + '.png');
  await p.screenshot({ path, ...opts });
  screenshots[name] = path;
}

// events returns the text of every entry of the page's event log.
const events = (p) => p.$$eval('#log .ev', (els) => els.map((e) => e.textContent));

// waitEvents waits for n entries of the log that contain every one of parts.
async function waitEvents(p, what, n, ...parts) {
  try {
    await p.waitForFunction(([n, parts]) => [...document.querySelectorAll('#log .ev')]
      .filter((e) => parts.every((s) => e.textContent.includes(s))).length >= n, [n, parts], { timeout: 10000 });
  } catch {
    throw new Error(`${what}: not ${n} event(s) with ${JSON.stringify(parts)} in the log; it has ${JSON.stringify(await events(p))}`);
  }
}
const waitEvent = (p, what, ...parts) => waitEvents(p, what, 1, ...parts);
const countEvents = async (p, ...parts) => (await events(p)).filter((t) => parts.every((s) => t.includes(s))).length;

async function waitText(p, sel, text, what) {
  try {
    await p.waitForFunction(([sel, text]) => {
      const el = document.querySelector(sel);
      return el && !el.closest('[hidden]') && el.textContent.includes(text);
    }, [sel, text], { timeout: 10000 });
  } catch {
    const got = await p.$eval(sel, (el) => el.textContent).catch(() => '(no such element)');
    throw new Error(`${what}: ${sel} does not show ${JSON.stringify(text)}; it shows ${JSON.stringify(got)}`);
  }
}

// wsUser connects as another user with the `ws` package, the token in
// the subprotocol list as the page sends it. request(event, data) resolves
// with the server's ack frame.
function wsUser(token, who) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(cfg.base.replace(/^http/, 'ws') + '/ws', ['sidecar.v1', 'bearer.' + token]);
    const waiting = new Map();
    let n = 0;
    ws.on('message', (d) => {
      let f;
      try { f = JSON.parse(d.toString()); } catch { return; }
      if (f.ack !== undefined && waiting.has(f.ack)) { waiting.get(f.ack)(f); waiting.delete(f.ack); }
    });
    ws.on('unexpected-response', (req, res) => reject(new Error(`${who}: the server refused the connection: ${res.statusCode}`)));
    ws.on('error', (err) => reject(new Error(`${who}: ${err.message}`)));
    ws.on('open', () => resolve({
      request: (event, data) => new Promise((res, rej) => {
        const ack = ++n;
        const timer = setTimeout(() => rej(new Error(`${who}: no ack to ${event} in 10 s`)), 10000);
        waiting.set(ack, (f) => { clearTimeout(timer); res(f); });
        ws.send(JSON.stringify({ event, data, ack }));
      }),
      close: () => new Promise((res) => { ws.once('close', res); ws.close(1000); }),
      terminate: () => ws.terminate(),
    }));
  });
}

async function postWebhook(id, type, data) {
  const body = JSON.stringify({ type, timestamp: new Date().toISOString(), data });
  const now = new Date();
  const res = await fetch(cfg.base + '/webhooks', {
    method: 'POST', body, headers: {
      'content-type': 'application/json', 'webhook-id': id,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': new Webhook(cfg.webhookSecret).sign(id, now, body),
    },
  });
  return { status: res.status, body: await res.json() };
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
  });
  page = context.pages()[0] ?? await context.newPage();
  // Keep the page's sockets within reach, to drop one as a network would (step 7).
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.testSockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) { super(...args); window.testSockets.push(this); }
    };
  });
  const notFound = [];
  page.on('response', (r) => { if (r.status() === 404) notFound.push(r.url()); });

  // 1. Open the page, connect as the tour's provider.
  await page.goto(cfg.base + '/socket-example.html');
  check((await page.textContent('#mintCmd')).trim() === cfg.mintCommand,
    `the page's mint hint is ${JSON.stringify(await page.textContent('#mintCmd'))}, want the README's ${JSON.stringify(cfg.mintCommand)}`);
  await page.fill('#token', cfg.userToken);
  await page.click('#connect');
  await waitText(page, '#status', 'connected', 'connect');
  await waitText(page, '#who', 'as prov-1 (provider)', 'connect');
  facts.who = await page.textContent('#who');

  // 2. The app posts the tour's webhook: the page shows the notification.
  const hook = await postWebhook('msg_page_1', 'booking.created',
    { id: 'b1', providerId: 'prov-1', customerName: 'Ana', serviceName: 'Haircut' });
  check(hook.status === 202, `webhook answered ${hook.status} ${JSON.stringify(hook.body)}`);
  await waitEvent(page, 'webhook', 'newNotification', 'Ana booked Haircut', '"bookingId":"b1"');
  facts.webhookEvent = (await events(page)).find((t) => t.includes('Ana booked Haircut'));
  await shot(page, 'webhook-received');

  // 3. The test API from the page: broadcast to all, then stats.
  await page.fill('#admin', cfg.adminToken);
  await page.fill('#title', 'Hello');
  await page.fill('#message', 'everyone, from the page');
  await page.click('#broadcast');
  await waitEvent(page, 'broadcast', 'newNotification', '"title":"Hello"', 'everyone, from the page');
  await waitText(page, '#apiOut', '"delivered": 1', 'broadcast answer');
  await waitText(page, '#statsLine', 'connections 1 · users 1', 'stats after broadcast');
  facts.broadcastAnswer = await page.textContent('#apiOut');
  facts.statsLine = await page.textContent('#statsLine');
  await page.fill('#sendTo', 'prov-1');
  await page.fill('#title', 'Just you');
  await page.click('#sendOne');
  await waitEvent(page, 'send to one', 'newNotification', '"title":"Just you"');
  await shot(page, 'broadcast');

  // 4. A phone, 390 px wide: the columns stack and nothing scrolls sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const layout = await page.evaluate(() => {
    const box = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return { left: r.left, right: r.right, top: r.top, bottom: r.bottom }; };
    return {
      innerWidth: window.innerWidth,
      scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
      connection: box('connection'), events: box('events'), presence: box('presence'), api: box('api'), client: box('client'),
    };
  });
  facts.phone = layout;
  check(layout.innerWidth === 390, `viewport is ${layout.innerWidth} px, want 390`);
  check(layout.scrollWidth <= layout.innerWidth, `at 390 px the page is ${layout.scrollWidth} px wide: it scrolls sideways`);
  for (const id of ['connection', 'events', 'presence', 'api', 'client']) {
    check(layout[id].left >= 0 && layout[id].right <= 390, `at 390 px #${id} spans ${layout[id].left}..${layout[id].right}`);
  }
  check(layout.events.top >= layout.connection.bottom && layout.presence.top >= layout.events.bottom &&
    layout.api.top >= layout.presence.bottom,
    `at 390 px the sections do not stack (connection, events, presence, api): ${JSON.stringify(layout)}`);
  await shot(page, 'phone-390', { fullPage: true });

  // Disconnect from an open connection: closed, and no reconnect.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click('#disconnect');
  await waitText(page, '#status', 'disconnected', 'disconnect');
  check(notFound.length === 0, `the page asked for what is not there (404): ${notFound.join(', ')}`);

  // 5. A token the server rejects: explained, no reconnect, Disconnect usable.
  for (const [name, tok, says] of [['bad-token', cfg.badToken, 'invalid token'], ['expired-token', cfg.expiredToken, 'token expired']]) {
    const p = await context.newPage();
    await p.goto(cfg.base + '/socket-example.html');
    await p.fill('#token', tok);
    await p.click('#connect');
    await waitText(p, '#explain', 'The server refused the connection before it opened', name);
    await waitText(p, '#explainWhy', 'the server says: ' + says, name);
    await waitText(p, '#status', 'refused: not reconnecting', name);
    await p.waitForTimeout(1500); // the page's first retry would come after 500 ms
    const log = await events(p);
    check(!log.some((t) => t.includes('reconnect')) && log.filter((t) => t.includes('close')).length === 1,
      `${name}: the page tried again: ${JSON.stringify(log)}`);
    check(!(await p.isDisabled('#disconnect')), `${name}: Disconnect is disabled`);
    facts[name] = await p.textContent('#explain');
    await shot(p, name);
    await p.click('#disconnect');
    await waitText(p, '#status', 'disconnected', name + ' then Disconnect');
    await p.close();
  }

  // 6. Presence: the provider's page watches u2, who is offline, then comes
  // online, sets a status, and leaves; the page's row follows each change.
  await page.bringToFront();
  await page.click('#connect'); // the token is still prov-1's
  await waitText(page, '#status.open', 'connected', 'presence: connect again');
  const row = (part) => `#presence-list [data-user="u2"] ${part}`;
  const rowText = () => page.$eval('#presence-list [data-user="u2"]', (el) => el.textContent);
  await page.fill('#watch-users', 'u2');
  await page.click('#watch-btn');
  await waitEvent(page, 'watch u2', 'presence', '"u2"');
  await waitText(page, '#presence-out', 'Watching u2.', 'watch u2');
  await waitText(page, row('.online'), 'offline', 'u2 before it connects');
  facts.presence = { before: await rowText() };

  u2 = await wsUser(cfg.u2Token, 'u2');
  await waitText(page, row('.online'), 'online', 'u2 connected');
  await waitEvent(page, 'u2 connected', 'userOnline', '"userId":"u2"');
  facts.presence.online = await rowText();

  const busy = await u2.request('updateStatus', { status: 'busy' });
  check(busy.ok === true, `u2's updateStatus busy was answered ${JSON.stringify(busy)}`);
  await waitText(page, row('.status'), 'busy', 'u2 set busy');
  await waitEvent(page, 'u2 set busy', 'statusUpdated', '"userId":"u2"', '"status":"busy"');
  facts.presence.busy = await rowText();
  await shot(page, 'presence-online');

  const left = Date.now();
  await u2.close();
  u2 = null;
  await waitText(page, row('.online'), 'offline', `u2 gone (after presence.grace, ${cfg.graceMs} ms)`);
  facts.presence.goneAfterMs = Date.now() - left;
  await waitEvent(page, 'u2 gone', 'userOffline', '"userId":"u2"', '"lastSeen"');
  const seen = await page.$eval(row('.last-seen'), (el) => ({ text: el.textContent, iso: el.title }));
  facts.presence.offline = await rowText();
  facts.presence.lastSeen = seen.iso;
  check(seen.text.startsWith('last seen '), `u2 gone: the row says ${JSON.stringify(facts.presence.offline)}, no last seen`);
  const seenAt = Date.parse(seen.iso);
  check(seenAt >= left - 5000 && seenAt <= Date.now() + 5000,
    `u2 gone: last seen ${JSON.stringify(seen.iso)}, want a time about now (${new Date(left).toISOString()})`);
  await shot(page, 'presence-offline');

  // The page's own status: the ack's answer shows, and statusUpdated comes
  // back to the sender's own connections. A status that is not a string,
  // sent from the client event panel, gets an error ack, shown as one.
  await page.fill('#my-status', 'away');
  await page.click('#set-status-btn');
  await waitText(page, '#my-status-out', 'Status set to away (ok).', 'my status');
  await waitEvent(page, 'my status', 'statusUpdated', '"userId":"prov-1"', '"status":"away"');
  facts.myStatus = await page.textContent('#my-status-out');
  await page.selectOption('#evname', 'updateStatus');
  await page.fill('#evdata', '{"status": 5}');
  await page.click('#send');
  await waitEvent(page, 'a status that is not a string', '(updateStatus) error', 'bad_request');
  facts.errorAck = (await events(page)).find((t) => t.includes('(updateStatus) error'));
  check(await page.$eval('#log .ev.err', (el) => el.textContent.includes('bad_request')),
    'the error ack is not marked as an error in the log');

  // 7. The connection drops: the page reconnects on its own with ?since=
  // the last id it saw, gets the event it missed meanwhile, then resumed;
  // and it watches u2 again.
  const lastId = await page.$eval('#log .ev .i:not(:empty)', (el) => el.textContent.replace(/^id /, ''));
  const socketsBefore = await page.evaluate(() => window.testSockets.length);
  const watchAcks = await countEvents(page, '(watch)', 'ok');
  await page.evaluate(() => window.testSockets.at(-1).close(4000, 'dropped by the test'));
  await waitText(page, '#status', 'reconnecting in', 'drop');
  const missed = await postWebhook('msg_page_2', 'booking.created',
    { id: 'b2', providerId: 'prov-1', customerName: 'Bo', serviceName: 'Beard trim' });
  check(missed.status === 202, `webhook while away answered ${missed.status} ${JSON.stringify(missed.body)}`);
  await waitEvent(page, 'reconnect', 'resumed', '"recovered":true');
  await waitEvent(page, 'the missed webhook', 'newNotification', 'Bo booked Beard trim');
  await waitText(page, '#status.open', 'connected', 'reconnect');
  const sinceUrl = await page.evaluate((n) => window.testSockets.slice(n).map((s) => s.url).at(-1), socketsBefore);
  check(sinceUrl && new URL(sinceUrl).searchParams.get('since') === lastId,
    `the page reconnected to ${sinceUrl}, want ?since=${lastId} (the last id it saw)`);
  const log = await events(page);
  check(log.filter((t) => t.includes('Bo booked Beard trim')).length === 1,
    `the missed event is in the log other than once: ${JSON.stringify(log)}`);
  facts.resumed = log.find((t) => t.includes('resumed'));
  facts.sinceUrl = sinceUrl;
  await waitEvents(page, 'watch u2 again', watchAcks + 1, '(watch)', 'ok');
  await waitText(page, row('.online'), 'offline', 'u2 after the reconnect');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'resumed');

  // Unwatch: the row goes.
  await page.fill('#watch-users', 'u2');
  await page.click('#unwatch-btn');
  await waitText(page, '#presence-out', 'No longer watching u2.', 'unwatch u2');
  check(await page.$('#presence-list [data-user="u2"]') === null, 'unwatch u2: the row is still there');
  check(notFound.length === 0, `the page asked for what is not there (404): ${notFound.join(', ')}`);
  console.log(JSON.stringify({ ok: true, screenshots, facts }));
} catch (err) {
  if (page && !page.isClosed()) await shot(page, 'failure').catch(() => {});
  console.log(JSON.stringify({ ok: false, error: String(err.stack || err), screenshots, facts }));
  process.exitCode = 1;
} finally {
  if (u2) u2.terminate();
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
