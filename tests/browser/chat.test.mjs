// End-to-end tests of the web chat page: a real parley server in demo mode, Debian's
// Chromium driven headless by playwright-core, two browser contexts as two people.
//
// Run from the repository root after `cargo build`:  node --test tests/browser/
// UPDATE_SCREENSHOTS=1 writes the screenshots into docs/screenshots/ (shown in the README);
// otherwise they go to tests/browser/screenshots/, which git ignores.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const binary = path.join(root, 'target', 'debug', 'parley');
const shotsDir = process.env.UPDATE_SCREENSHOTS
  ? path.join(root, 'docs', 'screenshots')
  : path.join(here, 'screenshots');
const chromiumPath = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';
const TEST_TIMEOUT = 60_000;
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let server;
let dataDir;
let base;
let browser;
const pageErrors = [];

/** Start `parley serve --demo` on a free loopback port and read the address it prints. */
async function startServer() {
  assert.ok(existsSync(binary), `${binary} is missing: run \`cargo build\` first`);
  dataDir = mkdtempSync(path.join(tmpdir(), 'parley-browser-'));
  const args = ['serve', '--demo', '--listen', '127.0.0.1:0', '--data', dataDir];
  // The in-memory store keeps each run independent where the server offers a choice.
  const help = execFileSync(binary, ['serve', '--help'], { encoding: 'utf8' });
  if (/--store\b/.test(help) && /\bmemory\b/.test(help)) args.push('--store', 'memory');
  // Seeding a long thread sends thousands of requests in seconds; no test here is about
  // the request rate limit.
  args.push('--requests-per-second', '0');
  const child = spawn(binary, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const addr = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`parley did not start:\n${stderr}`)), 20_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`parley exited with ${code}:\n${stderr}`));
    });
  });
  return { child, addr, stderr: () => stderr };
}

/** Poll `check` until it stops throwing (or returns true), for state that arrives live. */
async function eventually(check, { timeout = 10_000, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const ok = await check();
      if (ok !== false) return ok;
      last = new Error(`${what} not met`);
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last?.message}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function shot(page, name) {
  mkdirSync(shotsDir, { recursive: true });
  // Let the last frame and its re-render settle so the picture shows the state asserted.
  await page.waitForTimeout(150);
  await page.screenshot({ path: path.join(shotsDir, `${name}.png`) });
}

/** A new browser context (its own storage: a separate person) at the page. */
async function newPerson() {
  const context = await browser.newContext({ viewport: { width: 1180, height: 720 }, locale: 'en-GB' });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  await page.goto(base);
  return page;
}

/** Sign in as `handle` through the demo form. */
async function signIn(handle, page) {
  page = page || (await newPerson());
  await page.getByTestId('handle-input').fill(handle);
  await page.getByTestId('demo-sign-in').click();
  await page.locator('body[data-ready="true"]').waitFor();
  assert.equal(await page.getByTestId('whoami').textContent(), handle);
  return page;
}

let people = 0;
/** Fresh handles, so each test starts with people who share no history. */
function handles(...names) {
  people += 1;
  return names.map((n) => `${n}${people}`);
}

function person(page, user) {
  return page.locator(`[data-testid="person"][data-user="${user}"]`);
}

/** `a` asks `b` to connect through look-up; `b` accepts from the request list. */
async function connect(a, aName, b, bName) {
  await a.getByTestId('lookup-input').fill(bName);
  await a.getByTestId('lookup').click();
  await a.getByTestId('connect').click();
  await a.getByTestId('profile-state').filter({ hasText: 'Request sent' }).waitFor();
  await b.getByTestId('requests').locator(`[data-user="${aName}"]`).getByTestId('accept-request').click();
  await a.getByTestId('connections').locator(`[data-user="${bName}"]`).waitFor();
  await b.getByTestId('connections').locator(`[data-user="${aName}"]`).waitFor();
}

function conversationWith(page, user) {
  return page.locator(`[data-testid="conversation"][data-with="${user}"]`);
}

function message(page, text) {
  return page.getByTestId('messages').locator('[data-testid="message"]', { hasText: text });
}

/** Open (or start) the direct conversation with `user` and send `text`. */
async function sendDirect(page, user, text) {
  const existing = conversationWith(page, user);
  if (await existing.count()) await existing.click();
  else await person(page, user).getByTestId('message-connection').click();
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('send').click();
  await message(page, text).and(page.locator('[data-state="visible"]')).waitFor();
}

async function sendInOpen(page, text) {
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('send').click();
  await message(page, text).and(page.locator('[data-state="visible"]')).waitFor();
}

/**
 * A page that is no chat window, only a signed-in client module at `window.client`: it
 * sends as `handle` over its own socket, as fast as the server takes it, without clicking.
 */
async function clientPage(handle) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  await page.goto(`${base}static/parley-client.js`);
  await page.evaluate(async (user) => {
    const { ParleyClient } = await import('/static/parley-client.js');
    const token = (await (await fetch(`/demo/token?user=${user}`)).text()).trim();
    const client = new ParleyClient(() => `ws://${location.host}/ws?token=${token}`);
    await new Promise((resolve) => {
      client.on('ready', resolve);
      client.connect();
    });
    window.client = client;
  }, handle);
  return page;
}

/** Send `n` messages "Seed #1." … from the client page to `to`; the conversation's id. */
async function seedThread(sender, to, n) {
  return sender.evaluate(async ({ to, n }) => {
    const { message } = await window.client.send({ to, body: 'Seed #1.' });
    for (let i = 2; i <= n; i += 100) {
      const batch = Array.from({ length: Math.min(100, n - i + 1) }, (_, k) =>
        window.client.send({ conversation: message.conversation, body: `Seed #${i + k}.` }));
      await Promise.all(batch);
    }
    return message.conversation;
  }, { to, n });
}

/** The bodies of the messages in the DOM (the rendered window). */
function renderedBodies(page) {
  return page.getByTestId('messages').getByTestId('message-body').allTextContents();
}

async function assertPageDoesNotScroll(page, what) {
  const m = await page.evaluate(() => ({
    scrollHeight: document.scrollingElement.scrollHeight,
    innerHeight,
    statusTop: document.getElementById('status').getBoundingClientRect().top,
    composerBottom: document.getElementById('composer').getBoundingClientRect().bottom,
  }));
  assert.ok(m.scrollHeight <= m.innerHeight, `${what}: the page is ${m.scrollHeight} px tall in a ${m.innerHeight} px window`);
  assert.ok(m.statusTop >= 0, `${what}: the top bar is in view`);
  assert.ok(m.composerBottom <= m.innerHeight, `${what}: the composer ends at ${m.composerBottom} of ${m.innerHeight}`);
}

before(async () => {
  server = await startServer();
  base = `http://${server.addr}/`;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server) {
    server.child.kill('SIGTERM');
    await new Promise((r) => (server.child.exitCode !== null ? r() : server.child.once('exit', r)));
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('web chat in a real browser', { timeout: 5 * TEST_TIMEOUT * 2 }, () => {
  test('the page and client come from the binary; demo sign-in by handle', { timeout: TEST_TIMEOUT }, async () => {
    const res = await fetch(`${base}static/parley-client.js`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /javascript/);
    assert.match(await res.text(), /export class ParleyClient \{/);
    assert.equal((await fetch(`${base}demo/token?user=not%20a%20handle`)).status, 400);

    const page = await newPerson();
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.getByTestId('demo-form').waitFor();
    await page.getByTestId('handle-input').fill('newcomer');
    await shot(page, 'sign-in');
    await signIn('newcomer', page);
    await page.getByTestId('status').and(page.locator('[data-status="open"]')).waitFor();
    // The token stays out of the socket's URL (and so out of proxy logs): a one-time ticket.
    assert.ok(sockets.length > 0, 'the page opened a socket');
    for (const url of sockets) {
      assert.match(url, /\/ws\?ticket=/);
      assert.doesNotMatch(url, /token=/);
    }
    await page.context().close();
  });

  test('a message appears live on the other side; the read receipt shows and ends recall', { timeout: TEST_TIMEOUT }, async () => {
    const [alice, bob] = handles('alice', 'bob');
    const a = await signIn(alice);
    const b = await signIn(bob);
    await connect(a, alice, b, bob);

    await sendDirect(a, bob, 'Hi Bob, are you free on Friday?');
    const mine = message(a, 'Hi Bob, are you free on Friday?');
    await mine.getByTestId('recall').waitFor();

    // Bob has no thread open: the conversation shows up live with one unread message.
    const row = conversationWith(b, alice);
    await row.getByTestId('unread').filter({ hasText: '1' }).waitFor();
    assert.match(await row.getByTestId('conversation-preview').textContent(), /free on Friday/);
    await b.getByTestId('toast').filter({ hasText: 'free on Friday' }).waitFor();
    await shot(b, 'conversations');

    // Bob opens it and so reads it: Alice sees "Seen" and loses the Recall button.
    await row.click();
    await message(b, 'Hi Bob, are you free on Friday?').getByTestId('message-body').waitFor();
    await row.getByTestId('unread').waitFor({ state: 'detached' });
    await mine.getByTestId('seen').filter({ hasText: 'Seen' }).waitFor();
    await mine.getByTestId('recall').waitFor({ state: 'detached' });

    await sendInOpen(b, 'Yes! Friday at 10 works for me.');
    await message(a, 'Friday at 10 works').getByTestId('message-body').waitFor();
    await shot(a, 'thread');
    await a.context().close();
    await b.context().close();
  });

  test('a recall before reading removes the message on both sides', { timeout: TEST_TIMEOUT }, async () => {
    const [carol, dave] = handles('carol', 'dave');
    const c = await signIn(carol);
    const d = await signIn(dave);
    await connect(c, carol, d, dave);
    await sendDirect(c, dave, 'Quarterly numbers attached (draft!)');
    await conversationWith(d, carol).getByTestId('unread').filter({ hasText: '1' }).waitFor();
    await d.getByTestId('toast').filter({ hasText: 'Quarterly' }).waitFor();

    const sent = message(c, 'Quarterly numbers');
    const countdown = sent.getByTestId('recall-countdown');
    assert.match(await countdown.textContent(), /^[12]:\d\d$/);
    await shot(c, 'recall-countdown');
    await sent.getByTestId('recall').click();

    // Carol: a marker in its place, the text gone.
    await c.getByTestId('recalled-marker').filter({ hasText: 'You recalled this message' }).waitFor();
    await eventually(async () => (await c.getByText('Quarterly numbers').count()) === 0, { what: 'text gone for the sender' });

    // Dave: no unread count, no preview, notification retracted, a marker in the thread.
    const row = conversationWith(d, carol);
    await row.getByTestId('unread').waitFor({ state: 'detached' });
    await eventually(async () => (await d.getByText('Quarterly numbers').count()) === 0, { what: 'text gone for the recipient' });
    await row.click();
    await d.getByTestId('recalled-marker').filter({ hasText: `${carol} recalled this message` }).waitFor();
    assert.equal(await d.getByText('Quarterly numbers').count(), 0);
    await shot(d, 'recalled');
    await c.context().close();
    await d.context().close();
  });

  test('delete for me leaves a tombstone on one side only, also after a reload', { timeout: TEST_TIMEOUT }, async () => {
    const [erin, frank] = handles('erin', 'frank');
    const e = await signIn(erin);
    const f = await signIn(frank);
    await connect(e, erin, f, frank);
    await sendDirect(e, frank, 'Lunch menu: soup, bread, and a very long joke');
    await sendInOpen(e, 'See you at noon');
    await conversationWith(f, erin).click();
    const doomed = message(f, 'Lunch menu');
    await doomed.getByTestId('delete-for-me').click();

    await f.getByTestId('tombstone').filter({ hasText: 'This message has been deleted' }).waitFor();
    assert.equal(await f.getByText('Lunch menu').count(), 0);
    await message(f, 'See you at noon').getByTestId('message-body').waitFor();
    // The sender erin knows nothing of it.
    await message(e, 'Lunch menu').getByTestId('message-body').waitFor();
    assert.equal(await e.getByTestId('tombstone').count(), 0);
    await shot(f, 'tombstone');

    // The tombstone is the server's record, not the page's memory.
    await f.reload();
    await f.locator('body[data-ready="true"]').waitFor();
    await conversationWith(f, erin).click();
    await f.getByTestId('tombstone').waitFor();
    assert.equal(await f.getByText('Lunch menu').count(), 0);
    await e.context().close();
    await f.context().close();
  });

  test('a block stops messages, and unblocking lifts it', { timeout: TEST_TIMEOUT }, async () => {
    const [gina, hal] = handles('gina', 'hal');
    const g = await signIn(gina);
    const h = await signIn(hal);
    await connect(g, gina, h, hal);
    await sendDirect(g, hal, 'Did you get my proposal?');
    await conversationWith(h, gina).click();
    await message(h, 'proposal').waitFor();

    // Report the message first: the report keeps it as evidence.
    await message(h, 'proposal').getByTestId('report-message').click();
    await h.getByTestId('report-reason').fill('Unsolicited sales pitch');
    await h.getByTestId('report-send').click();
    await h.getByTestId('toast').filter({ hasText: 'report was sent' }).waitFor();

    await h.getByTestId('thread-block').click();
    await person(h, gina).filter({ has: h.getByTestId('unblock') }).waitFor();
    await h.getByTestId('thread-unblock').waitFor();

    // Gina is not told; her next message is refused with the neutral error.
    await g.getByTestId('composer').fill('Hello? Anyone there?');
    await g.getByTestId('send').click();
    await g.getByTestId('composer-error').filter({ hasText: 'can’t receive messages' }).waitFor();
    await shot(g, 'blocked-sender');
    // The refusal came before any delivery: Hal never has it.
    assert.equal(await h.getByText('Anyone there?').count(), 0);
    assert.equal(await h.getByTestId('messages').getByTestId('message').count(), 1);
    await shot(h, 'blocked');

    await h.getByTestId('blocked-list').getByTestId('unblock').click();
    await h.getByTestId('blocked-list').getByTestId('person').waitFor({ state: 'detached' });
    // Unblock restores messaging, not the connection: InMail gets through again.
    await g.getByTestId('new-inmail').click();
    await g.getByTestId('inmail-to').fill(hal);
    await g.getByTestId('inmail-body').fill('Sorry to bother you again about the proposal.');
    await g.getByTestId('inmail-send').click();
    await eventually(async () => (await h.getByText('Sorry to bother you again').count()) > 0, { what: 'InMail after unblock' });
    await g.context().close();
    await h.context().close();
  });

  test('InMail delete for everyone, with its countdown', { timeout: TEST_TIMEOUT }, async () => {
    const [ivy, jack] = handles('ivy', 'jack');
    const i = await signIn(ivy);
    const j = await signIn(jack);
    await i.getByTestId('new-inmail').click();
    await i.getByTestId('inmail-to').fill(jack);
    await i.getByTestId('inmail-body').fill('Hello Jack, I saw your talk on Rust services. Open to a chat about a role?');
    await i.getByTestId('inmail-send').click();
    const sent = message(i, 'saw your talk');
    await sent.getByTestId('delete-inmail').waitFor();
    assert.match(await sent.getByTestId('delete-countdown').textContent(), /^(10:00|9:\d\d)$/);
    await shot(i, 'inmail-delete');

    await conversationWith(j, ivy).getByTestId('unread').filter({ hasText: '1' }).waitFor();
    await conversationWith(j, ivy).click();
    await message(j, 'saw your talk').getByTestId('message-body').waitFor();

    await sent.getByTestId('delete-inmail').click();
    // Gone for both, with no marker and no notice.
    await eventually(async () => (await i.getByText('saw your talk').count()) === 0, { what: 'gone for the sender' });
    await eventually(async () => (await j.getByText('saw your talk').count()) === 0, { what: 'gone for the recipient' });
    assert.equal(await j.getByTestId('recalled-marker').count(), 0);
    // With nothing left in it, the InMail conversation leaves both inboxes.
    await conversationWith(i, jack).waitFor({ state: 'detached' });
    await conversationWith(j, ivy).waitFor({ state: 'detached' });
    await i.context().close();
    await j.context().close();
  });

  test('settings: with receipts off no "Seen" shows, yet reading still ends recall', { timeout: TEST_TIMEOUT }, async () => {
    const [kim, leo] = handles('kim', 'leo');
    const k = await signIn(kim);
    const l = await signIn(leo);
    await connect(k, kim, l, leo);
    await k.getByTestId('open-settings').click();
    await k.getByTestId('setting-read-receipts').selectOption('off');
    await k.getByTestId('setting-notification-preview').selectOption('sender_only');
    await shot(k, 'settings');
    await k.getByTestId('settings-save').click();
    await k.getByTestId('toast').filter({ hasText: 'Settings saved' }).waitFor();

    await sendDirect(l, kim, 'Can you review my pull request today?');
    const sent = message(l, 'pull request');
    await sent.getByTestId('recall').waitFor();
    // Kim's notification names the sender only, as her setting asks.
    await k.getByTestId('toast').filter({ hasText: `New message from ${leo}` }).waitFor();
    await conversationWith(k, leo).click();
    await message(k, 'pull request').getByTestId('message-body').waitFor();
    await sent.getByTestId('recall').waitFor({ state: 'detached' });
    assert.equal(await sent.getByTestId('seen').count(), 0);
    await k.context().close();
    await l.context().close();
  });

  test('mute and hide: a hidden conversation comes back with a new message', { timeout: TEST_TIMEOUT }, async () => {
    const [max, nia] = handles('max', 'nia');
    const m = await signIn(max);
    const n = await signIn(nia);
    await connect(m, max, n, nia);
    await sendDirect(m, nia, 'First note');
    const row = conversationWith(n, max);
    await row.click();
    await n.getByTestId('mute').click();
    await row.getByTestId('muted-badge').waitFor();
    await n.getByTestId('hide').click();
    await row.waitFor({ state: 'detached' });
    await sendInOpen(m, 'Second note');
    await row.waitFor();
    await row.getByTestId('muted-badge').waitFor();
    // Muted: no notification toast for the second note.
    assert.equal(await n.getByTestId('toast').filter({ hasText: 'Second note' }).count(), 0);
    await m.context().close();
    await n.context().close();
  });

  test('the page reconnects after a dropped connection and shows what it missed', { timeout: TEST_TIMEOUT }, async () => {
    const [quinn, rosa] = handles('quinn', 'rosa');
    const q = await newPerson();
    // Test-only hook: keep the page's sockets at hand, and while `__offline` is set make
    // new ones dial a path that refuses the upgrade, as if the network were down.
    await q.context().addInitScript(() => {
      const Real = window.WebSocket;
      window.__sockets = [];
      window.__offline = false;
      window.WebSocket = class extends Real {
        constructor(url, protocols) {
          super(window.__offline ? url.replace('/ws?', '/offline?') : url, protocols);
          window.__sockets.push(this);
        }
      };
    });
    await q.reload();
    await signIn(quinn, q);
    const r = await signIn(rosa);
    await connect(r, rosa, q, quinn);
    await sendDirect(r, quinn, 'Morning! Agenda in a minute.');
    await conversationWith(q, rosa).click();
    await message(q, 'Agenda in a minute').getByTestId('message-body').waitFor();

    await q.evaluate(() => {
      window.__offline = true;
      for (const ws of window.__sockets) ws.close();
    });
    await q.getByTestId('status').and(q.locator('[data-status="waiting"]')).waitFor();

    await sendInOpen(r, 'Agenda: 1. budget 2. hiring');
    await sendInOpen(r, 'ignore this one');
    await message(r, 'ignore this one').getByTestId('recall').click();
    await r.getByTestId('recalled-marker').waitFor();

    await q.evaluate(() => {
      window.__offline = false;
      window.dispatchEvent(new Event('online'));
    });
    await q.getByTestId('status').and(q.locator('[data-status="open"]')).waitFor();
    await message(q, 'budget 2. hiring').getByTestId('message-body').waitFor();
    assert.equal(await q.getByTestId('announcer').textContent(), '', 'replayed frames are not announced');
    await q.getByTestId('recalled-marker').filter({ hasText: `${rosa} recalled this message` }).waitFor();
    assert.equal(await q.getByText('ignore this one').count(), 0);
    // The open thread reads what arrived, so Rosa sees her message seen.
    await message(r, 'budget 2. hiring').getByTestId('seen').waitFor();
    await q.context().close();
    await r.context().close();
  });

  test('the client module resyncs what it missed while disconnected', { timeout: TEST_TIMEOUT }, async () => {
    const [olga, pete] = handles('olga', 'pete');
    const o = await signIn(olga);
    const p = await signIn(pete);
    await connect(o, olga, p, pete);
    await sendDirect(o, pete, 'before the drop');

    // A second session for Pete, from the module frontends copy, inside Pete's page.
    const limits = await p.evaluate(async () => {
      const { ParleyClient } = await import('/static/parley-client.js');
      const token = sessionStorage.getItem('parley.token');
      const client = new ParleyClient(() => `ws://${location.host}/ws?token=${token}`);
      const frames = [];
      client.on('frame', (f, { replayed }) => frames.push({ ...f, replayed }));
      window.probe = { client, frames };
      await new Promise((resolve) => {
        client.on('ready', resolve);
        client.connect();
      });
      client.close();
      return client.limits;
    });
    assert.equal(typeof limits.max_body_chars, 'number');

    await sendInOpen(o, 'sent while away');
    await sendInOpen(o, 'taken back while away');
    await message(o, 'taken back while away').getByTestId('recall').click();
    await o.getByTestId('recalled-marker').waitFor();

    const result = await p.evaluate(async (max) => {
      const { client, frames } = window.probe;
      frames.length = 0;
      const ready = new Promise((resolve) => client.on('ready', resolve));
      client.connect();
      const { reconnected } = await ready;
      // Limits come from hello: one character over is refused before it leaves the page.
      const tooLong = await client
        .send({ to: 'nobody', body: 'x'.repeat(max + 1) })
        .then(() => 'sent', (e) => e.code);
      client.close();
      return { reconnected, frames, tooLong };
    }, limits.max_body_chars);

    assert.equal(result.reconnected, true);
    assert.equal(result.tooLong, 'body_too_long');
    const replayed = result.frames.filter((f) => f.replayed);
    const bodies = replayed.filter((f) => f.type === 'message').map((f) => f.message.body);
    assert.ok(bodies.includes('sent while away'), JSON.stringify(replayed));
    assert.ok(!bodies.includes('before the drop'), 'nothing seen before is replayed as new');
    const recalled = replayed.filter((f) => f.type === 'message' && f.message.state === 'recalled');
    assert.equal(recalled.length, 1, 'the recalled one comes back as a marker, without text');
    assert.equal(recalled[0].message.body, undefined);
    assert.ok(replayed.some((f) => f.type === 'recalled' && f.message === recalled[0].message.id));
    await o.context().close();
    await p.context().close();
  });

  test('a 2,000-message thread: only the list scrolls, windowed, loaded by scrolling up', { timeout: 4 * TEST_TIMEOUT }, async () => {
    const [uma, vic] = handles('uma', 'vic');
    const u = await signIn(uma);
    const v0 = await signIn(vic);
    await connect(u, uma, v0, vic);
    // Vic comes back after the seeding, to open a long history rather than watch it arrive.
    await u.context().close();
    await v0.context().close();
    const seeder = await clientPage(uma);
    const conversation = await seedThread(seeder, vic, 2000);

    const v = await signIn(vic);
    await conversationWith(v, uma).click();
    await message(v, 'Seed #2000.').getByTestId('message-body').waitFor();

    // Scrolling to the top widens the window in place: the message at the top stays put.
    const scroller = v.getByTestId('messages-scroll');
    const top = await scroller.evaluate((el) => {
      el.scrollTop = 0;
      const first = document.querySelector('[data-testid="messages"] [data-testid="message"]');
      return { id: first.dataset.messageId, y: first.getBoundingClientRect().top };
    });
    await v.waitForFunction((id) => document.querySelector('[data-testid="messages"] [data-testid="message"]').dataset.messageId !== id, top.id);
    const { y, scrollTop } = await v.evaluate((id) => ({
      y: document.querySelector(`[data-message-id="${id}"]`).getBoundingClientRect().top,
      scrollTop: document.querySelector('[data-testid="messages-scroll"]').scrollTop,
    }), top.id);
    assert.ok(Math.abs(y - top.y) <= 2, `the message in view moved from ${top.y} to ${y}`);
    assert.ok(scrollTop > 0, 'earlier messages were added above the one in view');

    // Keep scrolling up, as a reader would: message 1 comes without a click.
    await v.waitForFunction(() => {
      const bodies = [...document.querySelectorAll('[data-testid="message-body"]')];
      if (bodies.some((b) => b.textContent === 'Seed #1.')) return true;
      document.querySelector('[data-testid="messages-scroll"]').scrollTop = 0;
      return false;
    }, null, { polling: 100, timeout: 90_000 });
    const windowAtTop = await renderedBodies(v);
    assert.ok(windowAtTop.length <= 150, `the DOM holds ${windowAtTop.length} messages`);
    assert.equal(windowAtTop[0], 'Seed #1.');
    assert.ok(!windowAtTop.includes('Seed #2000.'), 'the newest are out of the DOM at the top');

    // Both sizes: the page never scrolls, the top bar and the composer stay in view.
    for (const size of [{ width: 1280, height: 800 }, { width: 375, height: 740 }]) {
      await v.setViewportSize(size);
      await assertPageDoesNotScroll(v, `${size.width}×${size.height}, 2,000 loaded`);
    }
    await v.setViewportSize({ width: 1280, height: 800 });

    await v.getByTestId('jump-newest').click();
    await message(v, 'Seed #2000.').getByTestId('message-body').waitFor();
    await v.getByTestId('jump-newest').waitFor({ state: 'hidden' });

    // Select one message's text, focus another's Reply button, and watch for long tasks.
    await v.evaluate(() => {
      window.__longTasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longTasks.push(Math.round(e.duration));
      }).observe({ type: 'longtask' });
      const body = (text) => [...document.querySelectorAll('[data-testid="message-body"]')].find((b) => b.textContent === text);
      body('Seed #1999.').closest('[data-testid="message"]').querySelector('[data-testid="reply"]').focus();
      const range = document.createRange();
      range.selectNodeContents(body('Seed #1998.'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      window.__seenAt = new Promise((resolve) => {
        new MutationObserver((_, obs) => {
          if (body('Live #1.')) {
            obs.disconnect();
            resolve(Date.now());
          }
        }).observe(document.getElementById('messages'), { childList: true, subtree: true });
      });
    });
    const sentAt = await seeder.evaluate(async (conversation) => {
      const t0 = Date.now();
      await window.client.send({ conversation, body: 'Live #1.' });
      return t0;
    }, conversation);
    const seenAt = await v.evaluate(() => window.__seenAt);
    assert.ok(seenAt - sentAt <= 100, `the message showed ${seenAt - sentAt} ms after it was sent`);
    await seeder.evaluate((conversation) => window.client.typing(conversation), conversation);
    await v.getByTestId('typing').filter({ hasText: `${uma} is typing` }).waitFor();

    const after = await v.evaluate(() => ({
      selected: getSelection().toString(),
      focused: document.activeElement.dataset.testid,
      focusedIn: document.activeElement.closest('[data-testid="message"]')?.textContent,
      longTasks: window.__longTasks,
    }));
    assert.equal(after.selected, 'Seed #1998.');
    assert.equal(after.focused, 'reply');
    assert.match(after.focusedIn, /Seed #1999\./);
    assert.deepEqual(after.longTasks, [], 'no main-thread task over 50 ms');
    const windowAtBottom = await renderedBodies(v);
    assert.ok(windowAtBottom.length <= 150, `the DOM holds ${windowAtBottom.length} messages`);
    assert.equal(windowAtBottom.at(-1), 'Live #1.');
    await assertPageDoesNotScroll(v, 'after a new message');

    // Scrolled up, a new message does not pull the reader down: a control offers to go.
    await scroller.evaluate((el) => { el.scrollTop = 0; });
    await v.waitForFunction(() => document.querySelector('[data-testid="messages-scroll"]').scrollTop > 0);
    const readingAt = await scroller.evaluate((el) => el.scrollTop);
    await seeder.evaluate((conversation) => window.client.send({ conversation, body: 'Live #2.' }), conversation);
    const jump = v.getByTestId('jump-newest').filter({ hasText: 'New messages ↓' });
    await jump.waitFor();
    assert.equal(await scroller.evaluate((el) => el.scrollTop), readingAt, 'the reader stays where they were');
    await jump.click();
    await message(v, 'Live #2.').getByTestId('message-body').waitFor();
    assert.ok(await scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 40), 'at the bottom');
    await seeder.context().close();
    await v.context().close();
  });

  test('toasts: at most three, over no control, dismissable, gone in seconds', { timeout: TEST_TIMEOUT }, async () => {
    const [wes, xia] = handles('wes', 'xia');
    const w = await signIn(wes);
    const x = await signIn(xia);
    await connect(w, wes, x, xia);
    await sendDirect(w, xia, 'Note 1');
    for (const n of [2, 3, 4]) await sendInOpen(w, `Note ${n}`);
    await x.getByTestId('toast').filter({ hasText: 'Note 4' }).waitFor();
    assert.equal(await x.getByTestId('toast').count(), 3);
    assert.equal(await x.getByTestId('toast').filter({ hasText: 'Note 1' }).count(), 0, 'the oldest made way');

    // Block from the profile while the toasts are up: none of them hides a control.
    await x.getByTestId('lookup-input').fill(wes);
    await x.getByTestId('lookup').click();
    await x.getByTestId('profile-block').click();
    await x.getByTestId('toast').filter({ hasText: `You blocked ${wes}` }).waitFor();
    const overlaps = await x.evaluate(() => {
      const toasts = [...document.querySelectorAll('[data-testid="toast"]')].map((t) => t.getBoundingClientRect());
      const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
      return [...document.querySelectorAll('button, input, select, textarea, a[href]')]
        .filter((el) => !el.closest('#toasts') && el.getClientRects().length)
        .filter((el) => toasts.some((t) => hit(t, el.getBoundingClientRect())))
        .map((el) => el.textContent || el.id);
    });
    assert.deepEqual(overlaps, [], 'controls under a toast');
    await x.getByTestId('blocked-list').getByTestId('unblock').click();

    const first = x.getByTestId('toast').first();
    const text = await first.textContent();
    await first.getByRole('button', { name: 'Dismiss' }).click();
    await x.getByTestId('toast').filter({ hasText: text.replace('×', '') }).waitFor({ state: 'detached' });
    // The rest retire by themselves within a few seconds.
    await x.getByTestId('toast').first().waitFor({ state: 'detached', timeout: 7000 });
    await w.context().close();
    await x.context().close();
  });

  test('after an unblock the thread says to connect again, and the composer returns once connected', { timeout: TEST_TIMEOUT }, async () => {
    const [yan, zoe] = handles('yan', 'zoe');
    const y = await signIn(yan);
    const z = await signIn(zoe);
    await connect(y, yan, z, zoe);
    await sendDirect(y, zoe, 'Coffee later?');
    await conversationWith(z, yan).click();
    await z.getByTestId('thread-block').click();
    await z.getByTestId('blocked-note').filter({ hasText: `You blocked ${yan}` }).waitFor();
    await z.getByTestId('thread-unblock').click();

    // The block ended the connection; the unblock did not bring it back: no dead composer.
    const note = z.getByTestId('blocked-note');
    await note.filter({ hasText: 'not connected' }).waitFor();
    assert.equal(await z.getByTestId('composer').isVisible(), false);
    await note.getByTestId('gate-connect').click();
    await note.filter({ hasText: 'once they accept' }).waitFor();
    await y.getByTestId('requests').locator(`[data-user="${zoe}"]`).getByTestId('accept-request').click();

    await z.getByTestId('composer').waitFor();
    await note.waitFor({ state: 'hidden' });
    assert.equal(await z.getByTestId('composer-error').textContent(), '');
    await sendInOpen(z, 'Sorry, yes: coffee at 3.');
    await message(y, 'coffee at 3').getByTestId('message-body').waitFor();
    await y.context().close();
    await z.context().close();
  });

  test('details: no console errors, right-to-left text, dates, one main landmark, focus after Recall, settings on a phone', { timeout: TEST_TIMEOUT }, async () => {
    const [ada, ben] = handles('ada', 'ben');
    const consoleErrors = [];
    const context = await browser.newContext({ viewport: { width: 1180, height: 720 }, locale: 'en-GB' });
    const a = await context.newPage();
    a.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    a.on('pageerror', (e) => pageErrors.push(`${a.url()}: ${e.message}`));
    await a.goto(base);
    await signIn(ada, a);
    const b = await signIn(ben);
    await connect(a, ada, b, ben);
    assert.equal(await a.locator('main:visible').count(), 1, 'one main landmark in the list view');

    const arabic = 'هل أنت متاح يوم الجمعة؟';
    await sendDirect(a, ben, arabic);
    assert.equal(await a.locator('main:visible').count(), 1, 'one main landmark in the thread view');
    assert.equal(await message(a, arabic).getByTestId('message-body').evaluate((el) => getComputedStyle(el).direction), 'rtl');
    assert.equal(await a.getByTestId('composer').getAttribute('dir'), 'auto');

    // Recall takes its button away; focus stays on the message rather than falling to <body>.
    await sendInOpen(a, 'Wrong chat, sorry');
    await message(a, 'Wrong chat').getByTestId('recall').click();
    await a.getByTestId('recalled-marker').waitFor();
    assert.deepEqual(await a.evaluate(() => [document.activeElement.dataset.testid, document.activeElement.dataset.state]), ['message', 'recalled']);
    assert.deepEqual(consoleErrors, [], 'console errors while signing in and chatting');

    // Seen on a later day, a message's time carries its date.
    await b.clock.setFixedTime(Date.now() + 3 * 24 * 3600 * 1000);
    await b.reload();
    await b.locator('body[data-ready="true"]').waitFor();
    await conversationWith(b, ada).click();
    const stamp = await message(b, arabic).locator('time').textContent();
    assert.match(stamp, /[A-Za-z]{3}.*\d\d:\d\d/, `"${stamp}" names the day`);

    // On a phone the read-receipts choice fits its box.
    await b.setViewportSize({ width: 375, height: 740 });
    await b.getByTestId('close-thread').click();
    await b.getByTestId('open-settings').click();
    const fit = await b.getByTestId('setting-read-receipts').evaluate((select) => {
      const probe = document.createElement('span');
      probe.style.font = getComputedStyle(select).font;
      probe.style.position = 'absolute';
      probe.style.whiteSpace = 'nowrap';
      probe.textContent = select.selectedOptions[0].textContent;
      document.body.append(probe);
      const text = probe.getBoundingClientRect().width;
      probe.remove();
      const box = select.getBoundingClientRect();
      return { text, room: select.clientWidth - 40, right: box.right, width: innerWidth };
    });
    assert.ok(fit.text <= fit.room, `the choice is ${fit.text} px in ${fit.room} px`);
    assert.ok(fit.right <= fit.width);
    await context.close();
    await b.context().close();
  });

  test('a group started from the page reaches everyone in it', { timeout: TEST_TIMEOUT }, async () => {
    const [gus, hana, ira] = handles('gus', 'hana', 'ira');
    const g = await signIn(gus);
    const hn = await signIn(hana);
    const ir = await signIn(ira);
    await connect(g, gus, hn, hana);
    await connect(g, gus, ir, ira);

    await g.getByTestId('new-group').click();
    await g.getByTestId('group-name').fill('Offsite planning');
    await g.getByTestId('group-member').and(g.locator(`[data-user="${hana}"]`)).check();
    // One member is not a group: the page says so before asking the server.
    await g.getByTestId('group-create').click();
    await g.getByTestId('group-error').filter({ hasText: 'at least two' }).waitFor();
    await g.getByTestId('group-member').and(g.locator(`[data-user="${ira}"]`)).check();
    await g.getByTestId('group-create').click();

    await g.getByTestId('thread-title').filter({ hasText: 'Offsite planning' }).waitFor();
    assert.match(await g.locator('#thread-sub').textContent(), new RegExp(`Group · .*${hana}.*${ira}`));
    await sendInOpen(g, 'Welcome, both of you!');
    for (const p of [hn, ir]) {
      const row = p.getByTestId('conversation').filter({ hasText: 'Offsite planning' });
      await row.getByTestId('unread').filter({ hasText: '1' }).waitFor();
      await row.click();
      await message(p, 'Welcome, both of you!').getByTestId('message-body').waitFor();
    }
    await sendInOpen(ir, 'Thanks!');
    await message(hn, 'Thanks!').getByTestId('message-body').waitFor();
    await message(g, 'Thanks!').getByTestId('message-body').waitFor();
    for (const p of [g, hn, ir]) await p.context().close();
  });

  test('Recall is offered only while it would succeed: the allowance and the throttle', { timeout: TEST_TIMEOUT }, async () => {
    const [jon, kay] = handles('jon', 'kay');
    const j = await signIn(jon);
    const k = await signIn(kay);
    await connect(j, jon, k, kay);
    await sendDirect(j, kay, 'First thought');
    await sendInOpen(j, 'Second thought');
    const second = message(j, 'Second thought');
    await second.getByTestId('recall').waitFor();
    await message(j, 'First thought').getByTestId('recall').click();
    await j.getByTestId('recalled-marker').waitFor();
    // One recall per conversation a day (hello's limits): the other message, unread and in
    // its window, no longer offers a recall the server would refuse.
    await second.getByTestId('recall').waitFor({ state: 'detached' });
    assert.equal(await j.getByTestId('toast').filter({ hasText: 'recall' }).count(), 0);

    // The throttle: more than 30 messages in a minute, here sent from another session.
    const [lou, mae] = handles('lou', 'mae');
    const l = await signIn(lou);
    const m = await signIn(mae);
    await connect(l, lou, m, mae);
    await sendDirect(l, mae, 'Hello before the flood');
    const hello = message(l, 'Hello before the flood');
    await hello.getByTestId('recall').waitFor();
    const other = await clientPage(lou);
    await seedThread(other, mae, 31);
    await message(l, 'Seed #31.').waitFor();
    await hello.getByTestId('recall').waitFor({ state: 'detached' });
    assert.equal(await l.getByTestId('messages').getByTestId('recall').count(), 0);
    for (const p of [j, k, l, m, other]) await p.context().close();
  });

  test('a second tab is signed in without the form; signing out of one signs out of both', { timeout: TEST_TIMEOUT }, async () => {
    const [nat] = handles('nat');
    const first = await signIn(nat);
    const second = await first.context().newPage();
    second.on('pageerror', (e) => pageErrors.push(`${second.url()}: ${e.message}`));
    await second.goto(base);
    await second.locator('body[data-ready="true"]').waitFor();
    assert.equal(await second.getByTestId('whoami').textContent(), nat);
    assert.equal(await second.getByTestId('signin').isVisible(), false);
    await second.getByTestId('status').and(second.locator('[data-status="open"]')).waitFor();
    // Shared, not persisted: the token is nowhere in long-lived storage.
    assert.equal(await second.evaluate(() => localStorage.length), 0);

    await second.getByTestId('sign-out').click();
    await first.getByTestId('demo-form').waitFor();
    await second.getByTestId('demo-form').waitFor();
    await first.context().close();
  });

  test('axe-core finds no accessibility violation in any view, at either size', { timeout: 2 * TEST_TIMEOUT }, async () => {
    const [oda, pia] = handles('oda', 'pia');
    // The page's CSP admits only its own scripts; the checker comes from the test.
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-GB', bypassCSP: true });
    context.setDefaultTimeout(10_000);
    const o = await context.newPage();
    o.on('pageerror', (e) => pageErrors.push(`${o.url()}: ${e.message}`));
    const audit = async (view) => {
      if (!(await o.evaluate(() => Boolean(window.axe)))) await o.evaluate(axeSource);
      const { passes, violations } = await o.evaluate(async () => {
        const result = await window.axe.run(document);
        return {
          passes: result.passes.length,
          violations: result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`),
        };
      });
      assert.ok(passes > 0, `axe checked nothing in ${view}`);
      assert.deepEqual(violations, [], `axe violations in ${view}`);
    };
    await o.goto(base);
    await o.getByTestId('demo-form').waitFor();
    await audit('sign-in');
    await signIn(oda, o);
    const p = await signIn(pia);
    await connect(o, oda, p, pia);
    await sendDirect(p, oda, 'Are the slides ready?');
    await conversationWith(o, pia).getByTestId('unread').waitFor();
    await audit('conversation list');
    await conversationWith(o, pia).click();
    await sendInOpen(o, 'Nearly: ten minutes.');
    await audit('thread');
    for (const [open, dialog, close] of [
      ['open-settings', 'settings-dialog', '#settings-cancel'],
      ['new-inmail', 'inmail-dialog', '#inmail-cancel'],
      ['new-group', 'group-dialog', '#group-cancel'],
    ]) {
      await o.getByTestId(open).click();
      await o.getByTestId(dialog).waitFor();
      await audit(dialog);
      await o.locator(close).click();
    }
    await message(o, 'slides ready').getByTestId('report-message').click();
    await audit('report-dialog');
    await o.locator('#report-cancel').click();
    await o.setViewportSize({ width: 375, height: 740 });
    await audit('thread on a phone');
    await o.getByTestId('close-thread').click();
    await audit('conversation list on a phone');
    await context.close();
    await p.context().close();
  });

  test('no page threw an uncaught error', () => {
    assert.deepEqual(pageErrors, []);
  });
});
