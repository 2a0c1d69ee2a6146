// Drives the example page (/socket-example.html) in headless Chromium, as a
// person would, for TestExamplePageInABrowser (cmd/sidecar).
// usage: node page.mjs '<json config>'
//   {"base": "http://127.0.0.1:port", "chromium": "/usr/bin/chromium",
//    "out": "<screenshot dir>", "webhookSecret": "whsec_...",
//    "userToken": "<prov-1, provider>", "adminToken": "<ops, admin>",
//    "badToken": "<signed with another secret>", "expiredToken": "...",
//    "mintCommand": "<the command the page must show>"}
// Each step checks what the page shows through the DOM and saves a
// screenshot of it. Prints one JSON line: {"ok": true, "screenshots":
// {...}, "facts": {...}}, or {"ok": false, "error": "..."} and exits 1.
import { chromium } from 'playwright-core';
import { Webhook } from 'standardwebhooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const profile = mkdtempSync(join(tmpdir(), 'sidecar-chromium-'));
const screenshots = {};
const facts = {};
let context;
let page;

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

async function waitEvent(p, what, ...parts) {
  try {
    await p.waitForFunction((parts) => [...document.querySelectorAll('#log .ev')]
      .some((e) => parts.every((s) => e.textContent.includes(s))), parts, { timeout: 10000 });
  } catch {
    throw new Error(`${what}: no event with ${JSON.stringify(parts)} in the log; it has ${JSON.stringify(await events(p))}`);
  }
}

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
      connection: box('connection'), events: box('events'), api: box('api'), client: box('client'),
    };
  });
  facts.phone = layout;
  check(layout.innerWidth === 390, `viewport is ${layout.innerWidth} px, want 390`);
  check(layout.scrollWidth <= layout.innerWidth, `at 390 px the page is ${layout.scrollWidth} px wide: it scrolls sideways`);
  for (const id of ['connection', 'events', 'api', 'client']) {
    check(layout[id].left >= 0 && layout[id].right <= 390, `at 390 px #${id} spans ${layout[id].left}..${layout[id].right}`);
  }
  check(layout.events.top >= layout.connection.bottom && layout.api.top >= layout.events.bottom,
    `at 390 px the sections do not stack (connection, events, api): ${JSON.stringify(layout)}`);
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
  console.log(JSON.stringify({ ok: true, screenshots, facts }));
} catch (err) {
  if (page && !page.isClosed()) await shot(page, 'failure').catch(() => {});
  console.log(JSON.stringify({ ok: false, error: String(err.stack || err), screenshots, facts }));
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
