// ParleyClient against a real server: on Node 20, which has no global WebSocket, with the
// `ws` package's passed as the `WebSocket` option; with one installed as the global; and
// with none at all.
//
// Run from web/ after `cargo build`:  node --test test/

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { ParleyClient, ParleyError } from '../parley-client.js';
import { startServer } from './server.mjs';

const EVENT_TIMEOUT_MS = 5_000;

/** The arguments of the next `event` that `accept` takes, or a rejection after a timeout. */
function next(client, event, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${EVENT_TIMEOUT_MS} ms`));
    }, EVENT_TIMEOUT_MS);
    const off = client.on(event, (...args) => {
      if (!accept(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

let users = 0;
/** A handle no other test uses, so each test starts with people who share no history. */
const fresh = (name) => `${name}${(users += 1)}`;

let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

/** A client for a fresh `name`, connected and synced. */
async function signedIn(name, options = { WebSocket }) {
  const user = fresh(name);
  const client = new ParleyClient(() => server.url(user), { initialBackoffMs: 20, ...options });
  const ready = next(client, 'ready');
  client.connect();
  const [{ sync, reconnected }] = await ready;
  assert.equal(reconnected, false);
  assert.deepEqual(sync.inbox, []);
  return client;
}

/** Two fresh users, connected to each other, each with a synced client. */
async function connectedPair(options) {
  const alice = await signedIn('alice', options);
  const bob = await signedIn('bob', options);
  const asked = next(bob, 'connection_request');
  assert.equal((await alice.connectTo(bob.user)).state, 'requested');
  assert.equal((await asked)[0].from, alice.user);
  assert.equal((await bob.accept(alice.user)).state, 'connected');
  return { alice, bob };
}

describe('with the ws package passed as the WebSocket option', () => {
  const clients = [];
  const pair = async () => {
    const { alice, bob } = await connectedPair();
    clients.push(alice, bob);
    return { alice, bob };
  };
  after(() => clients.forEach((c) => c.close()));

  const hasGlobal = Number(process.versions.node.split('.')[0]) >= 22;
  test('Node before 22 has no global WebSocket, so the option is what connects', { skip: hasGlobal }, () => {
    assert.equal(globalThis.WebSocket, undefined);
  });

  test('reads hello and the limits from the server', async () => {
    const { alice } = await pair();
    assert.equal(alice.status, 'open');
    assert.ok(alice.ready);
    assert.equal(alice.hello.protocol, 1);
    assert.match(alice.user, /^alice\d+$/);
    assert.ok(alice.limits.max_body_chars > 0);
    assert.ok(alice.limits.max_frame_bytes > alice.limits.max_body_chars);
  });

  test('answers a request by promise and pushes the message to the other user', async () => {
    const { alice, bob } = await pair();
    const pushed = next(bob, 'message');
    const { kind, message } = await alice.send({ to: bob.user, body: 'Hello Bob' });
    assert.equal(kind, 'sent');
    assert.equal(message.sender, alice.user);
    assert.equal(message.body, 'Hello Bob');
    const [frame, { replayed }] = await pushed;
    assert.equal(replayed, false);
    assert.equal(frame.message.id, message.id);
    assert.equal(frame.message.body, 'Hello Bob');
    assert.equal(bob.positions.get(message.conversation), message.seq);
  });

  test('rejects a refused request with the protocol error code', async () => {
    const { alice } = await pair();
    const refused = await alice.send({ to: fresh('stranger'), body: 'hi' }).catch((e) => e);
    assert.ok(refused instanceof ParleyError, `expected a ParleyError, got ${refused}`);
    assert.equal(refused.code, 'recipient_unavailable');
    assert.match(refused.id, /^c-[0-9a-f]{24}$/);
  });

  test('refuses an over-long body before sending, from the limits in hello', async () => {
    const { alice, bob } = await pair();
    const body = 'x'.repeat(alice.limits.max_body_chars + 1);
    await assert.rejects(alice.send({ to: bob.user, body }), { code: 'body_too_long' });
  });

  test('after a reconnect, syncs what was missed and sends what was queued offline', async () => {
    const { alice, bob } = await pair();
    const delivered = next(bob, 'message');
    const { message: first } = await alice.send({ to: bob.user, body: 'before' });
    assert.equal((await delivered)[0].message.id, first.id);

    bob.close();
    const { message: missed } = await alice.send({ conversation: first.conversation, body: 'while you were away' });
    // Asked for while offline: held, then sent by the next session.
    const queued = bob.send({ conversation: first.conversation, body: 'back again' });

    const replayed = next(bob, 'message', (f) => f.message.id === missed.id);
    const ready = next(bob, 'ready');
    const toAlice = next(alice, 'message', (f) => f.message.body === 'back again');
    bob.connect();
    const [frame, info] = await replayed;
    assert.equal(info.replayed, true);
    assert.equal(frame.message.body, 'while you were away');
    assert.equal((await ready)[0].reconnected, true);
    const { message: sent } = await queued;
    assert.equal(sent.body, 'back again');
    assert.equal((await toAlice)[0].message.id, sent.id);
  });
});

describe('when the server goes away', () => {
  test('reconnects to the restarted server on its own and syncs what came meanwhile', async () => {
    // Bob's next connect waits until Alice has written to him, so he misses it for sure.
    let letBobIn;
    const bobMayConnect = new Promise((resolve) => (letBobIn = resolve));
    const options = { WebSocket, maxBackoffMs: 200 };
    const alice = await signedIn('alice', options);
    const bobName = fresh('bob');
    let bobConnects = 0;
    const bob = new ParleyClient(
      async () => {
        bobConnects += 1;
        if (bobConnects > 1) await bobMayConnect;
        return server.url(bobName);
      },
      { ...options, initialBackoffMs: 20 },
    );
    try {
      const bobReady = next(bob, 'ready');
      bob.connect();
      await bobReady;
      const asked = next(bob, 'connection_request');
      await alice.connectTo(bobName);
      await asked;
      await bob.accept(alice.user);

      const aliceBack = next(alice, 'ready', ({ reconnected }) => reconnected);
      const bobWaiting = next(bob, 'status', (status) => status === 'waiting');
      await server.restart();
      await bobWaiting;
      await aliceBack;
      const { message: missed } = await alice.send({ to: bobName, body: 'sent while you were away' });

      const replayed = next(bob, 'message', (f) => f.message.id === missed.id);
      const bobBack = next(bob, 'ready');
      letBobIn();
      const [frame, { replayed: fromSync }] = await replayed;
      assert.equal(fromSync, true);
      assert.equal(frame.message.body, 'sent while you were away');
      assert.equal((await bobBack)[0].reconnected, true);
      assert.equal(bob.positions.get(missed.conversation), missed.seq);
    } finally {
      alice.close();
      bob.close();
    }
  });
});

describe('with a global WebSocket and no option', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  const clients = [];
  before(() => {
    globalThis.WebSocket = WebSocket;
  });
  after(() => {
    clients.forEach((c) => c.close());
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
    else delete globalThis.WebSocket;
  });

  test('connects, answers a request and receives a push', async () => {
    const { alice, bob } = await connectedPair({});
    clients.push(alice, bob);
    assert.ok(alice.limits.max_body_chars > 0);
    const pushed = next(alice, 'message');
    const { message } = await bob.send({ to: alice.user, body: 'over the global socket' });
    assert.equal((await pushed)[0].message.id, message.id);
  });
});

describe('with no WebSocket implementation at all', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  before(() => {
    delete globalThis.WebSocket;
  });
  after(() => {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
  });

  test('connect() throws at once, naming the option, and does not retry', () => {
    const client = new ParleyClient(() => server.url(fresh('nobody')));
    const statuses = [];
    client.on('status', (s) => statuses.push(s));
    assert.throws(() => client.connect(), (e) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /no WebSocket implementation/);
      assert.match(e.message, /\{ WebSocket \}/);
      return true;
    });
    assert.equal(client.status, 'idle');
    assert.deepEqual(statuses, []);
    assert.throws(() => client.reconnect(), /no WebSocket implementation/);
  });
});
