// parley-client.js — a small, dependency-free client for the parley WebSocket protocol.
//
// Copy this one file into any frontend, or depend on the `parley-client` package (web/),
// which adds TypeScript declarations. It speaks protocol version 1 as written in
// protocol/README.md: it answers every request with a promise (matched by `id`), reads the
// limits from `hello` instead of hard-coding them, reconnects with exponential backoff, and
// on reconnect asks `sync` for everything missed since the positions it tracked, replaying
// the returned updates as ordinary frames.
//
//   import { ParleyClient } from './parley-client.js';
//   const client = new ParleyClient(() => `wss://chat.example/ws?token=${token}`);
//   client.on('message', (f) => console.log(f.message.sender, f.message.body));
//   client.on('ready', ({ sync }) => console.log('inbox', sync.inbox));
//   client.connect();
//   const ack = await client.send({ to: 'bob', body: 'Hello' });
//
// It opens sockets with the global `WebSocket` (browsers, Deno, Bun, Node 22 and later).
// Elsewhere pass an implementation as the `WebSocket` option, such as the `ws` package's
// on Node 20; with neither, `connect()` throws a TypeError saying so:
//
//   import { WebSocket } from 'ws';
//   const client = new ParleyClient(url, { WebSocket });

/** Protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------
// Wire shapes. They come from protocol.d.ts, generated from the protocol's JSON Schemas
// (`npm run types`), so they cannot drift from the server's; every other one is there too
// (`import('parley-client/protocol')`).
// ---------------------------------------------------------------------------------------

/**
 * @typedef {import('./protocol.js').Request} Request
 * @typedef {import('./protocol.js').ServerFrame} ServerFrame
 * @typedef {import('./protocol.js').HelloFrame} HelloFrame
 * @typedef {import('./protocol.js').ErrorFrame} ErrorFrame
 * @typedef {import('./protocol.js').ErrorCode} ErrorCode
 * @typedef {import('./protocol.js').Limits} Limits
 * @typedef {import('./protocol.js').Settings} Settings
 * @typedef {import('./protocol.js').MessageView} MessageView
 * @typedef {import('./protocol.js').ConversationView} ConversationView
 * @typedef {import('./protocol.js').ConversationUpdate} ConversationUpdate
 * @typedef {import('./protocol.js').ReportTarget} ReportTarget
 * @typedef {import('./protocol.js').AckResult} AckResult
 * @typedef {import('./protocol.js').OkResult} OkResult
 * @typedef {import('./protocol.js').SentResult} SentResult
 * @typedef {import('./protocol.js').ConversationResult} ConversationResult
 * @typedef {import('./protocol.js').ConnectionResult} ConnectionResult
 * @typedef {import('./protocol.js').SettingsResult} SettingsResult
 * @typedef {import('./protocol.js').ReportedResult} ReportedResult
 * @typedef {import('./protocol.js').ReportsResult} ReportsResult
 * @typedef {import('./protocol.js').ProfileResult} ProfileResult
 * @typedef {import('./protocol.js').SyncResult} SyncResult
 * @typedef {import('./protocol.js').HistoryResult} HistoryResult
 */

/**
 * The ack result each request type is answered with (protocol/README.md, "Requests and
 * answers"). A request type the schemas gain without an entry here fails the type check.
 * @typedef {{
 *   send: SentResult, inmail: SentResult, create_group: ConversationResult,
 *   read: OkResult, recall: OkResult, delete_inmail: OkResult, delete_for_me: OkResult,
 *   connect: ConnectionResult, accept: ConnectionResult, decline: ConnectionResult,
 *   disconnect: ConnectionResult, block: OkResult, unblock: OkResult,
 *   report: ReportedResult, list_reports: ReportsResult, mute: OkResult, hide: OkResult,
 *   settings: SettingsResult, typing: OkResult, lookup: ProfileResult, sync: SyncResult,
 *   history: HistoryResult,
 * }} Answers
 */

/**
 * The fields of a request of type `T` besides `id` and `type`.
 * @template {Request['type']} T
 * @typedef {Omit<Extract<Request, {type: T}>, 'id' | 'type'>} RequestFields
 */

/**
 * An event handler property that each implementation may declare with its own, richer
 * event type: TypeScript compares the parameters of methods both ways, which a plain
 * function type would not allow.
 * @template E
 * @typedef {{handle(event: E): void}['handle']} EventHandler
 */

/**
 * The part of the WebSocket API this client uses, which the browser's, Node 22's global
 * and the `ws` package's all provide.
 * @typedef {{
 *   send(data: string): void,
 *   close(code?: number, reason?: string): void,
 *   onmessage: EventHandler<{data: unknown}> | null,
 *   onclose: EventHandler<{code: number, reason: string}> | null,
 *   onerror: EventHandler<unknown> | null,
 * }} WebSocketLike
 * @typedef {new (url: string) => WebSocketLike} WebSocketConstructor
 */

/** A request waiting for its answer.
 * @typedef {object} Pending
 * @property {Request} request
 * @property {string} text The request as sent, so a retry carries the same bytes and id.
 * @property {(result: AckResult) => void} resolve
 * @property {(error: ParleyError) => void} reject
 * @property {ReturnType<typeof setTimeout> | null} timer
 */

/**
 * Client-side states of the connection.
 * @typedef {'idle'|'connecting'|'open'|'waiting'|'closed'} ConnectionStatus
 */

/**
 * Options for {@link ParleyClient}.
 * @typedef {object} ClientOptions
 * @property {number} [initialBackoffMs=500] First reconnect delay.
 * @property {number} [maxBackoffMs=30000] Longest reconnect delay.
 * @property {number} [requestTimeoutMs=15000] A request with no answer this long fails with `timeout`.
 * @property {number} [maxSyncRounds=20] Follow-up syncs allowed while updates say `more`.
 * @property {WebSocketConstructor} [WebSocket] WebSocket implementation: the global one
 *   when left out, which Node has only from version 22 (pass the `ws` package's before).
 */

/** @typedef {'disconnected'|'timeout'|'closed'|'body_too_long'|'frame_too_large'} ClientErrorCode */

/** A refused or failed request. `code` is a protocol error code, or one of the client's own:
 * `disconnected`, `timeout`, `closed`, `body_too_long`, `frame_too_large`. */
export class ParleyError extends Error {
  /**
   * @param {ErrorCode | ClientErrorCode} code
   * @param {string} message
   * @param {string} [id] The request id, when there was one.
   */
  constructor(code, message, id) {
    super(message);
    this.name = 'ParleyError';
    this.code = code;
    this.id = id;
  }
}

/** Close codes after which reconnecting cannot help. */
const FATAL_ERRORS = new Set(['unauthorized']);

/** Requests not re-sent after a reconnect: a retried recall or InMail delete whose first
 * attempt succeeded answers `not_found`, typing is stale by then, and every new session
 * syncs anyway. Everything else is safe to retry with its id (protocol/README.md). */
/** @type {Set<Request['type']>} */
const NOT_RESENT = new Set(['recall', 'delete_inmail', 'typing', 'sync']);
/** @param {Request['type']} type */
const resendable = (type) => !NOT_RESENT.has(type);

/** A request id unique across tabs, devices and reloads: the server deduplicates `send` by
 * id, so reusing an old one would silently return the old message. */
function newRequestId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'c-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Length in characters as the server counts them (Unicode scalar values).
 * @param {string} text */
export function bodyLength(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/**
 * A parley session that survives disconnects.
 *
 * Events (subscribe with {@link ParleyClient#on}):
 * - every server frame type (`message`, `read`, `recalled`, `deleted-view`, …) with the
 *   frame; frames replayed from a resync come with `{replayed: true}` as second argument;
 * - `frame`: every server frame, `(frame, {replayed})`;
 * - `hello`: the `hello` frame of each new session;
 * - `ready`: `{sync, reconnected}` once a session is open and synced;
 * - `status`: the {@link ConnectionStatus} and, when waiting, the delay in ms;
 * - `fatal`: an {@link ErrorFrame} after which the client stops (a refused token).
 */
export class ParleyClient {
  /**
   * @param {string | (() => string | Promise<string>)} url WebSocket URL, or a function
   *   giving it afresh on each connect (to refresh a token).
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    this._url = typeof url === 'function' ? url : () => url;
    this._opts = {
      initialBackoffMs: 500,
      maxBackoffMs: 30000,
      requestTimeoutMs: 15000,
      maxSyncRounds: 20,
      ...options,
    };
    /** @type {WebSocketConstructor | undefined} */
    this._WS = options.WebSocket || globalThis.WebSocket;
    /** @type {Map<string, Set<(...args: any[]) => void>>} */
    this._handlers = new Map();
    /** @type {Map<string, Pending>} */
    this._pending = new Map();
    /** @type {Map<string, number>} last position seen per conversation */
    this.positions = new Map();
    /** @type {HelloFrame | null} */
    this.hello = null;
    /** @type {ConnectionStatus} */
    this.status = 'idle';
    /** @type {WebSocketLike | null} */
    this._ws = null;
    this._attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._retryTimer = null;
    this._wanted = false;
    this._synced = false;
    this._opening = false;
    this._skewMs = 0;
  }

  // -- events -----------------------------------------------------------------------------

  /**
   * Subscribe to an event; returns a function that unsubscribes.
   * @param {string} event
   * @param {(...args: any[]) => void} handler
   */
  on(event, handler) {
    let handlers = this._handlers.get(event);
    if (!handlers) this._handlers.set(event, (handlers = new Set()));
    handlers.add(handler);
    return () => this._handlers.get(event)?.delete(handler);
  }

  /** @param {string} event @param {...unknown} args */
  _emit(event, ...args) {
    for (const handler of this._handlers.get(event) || []) {
      try {
        handler(...args);
      } catch (e) {
        // One faulty handler must not stop the others or the socket loop.
        console.error(`parley: ${event} handler failed`, e);
      }
    }
  }

  /** @param {ConnectionStatus} status @param {object} [detail] */
  _setStatus(status, detail) {
    this.status = status;
    this._emit('status', status, detail);
  }

  // -- state ------------------------------------------------------------------------------

  /** Limits announced by the server (null before the first `hello`).
   * @returns {Limits | null} */
  get limits() {
    return this.hello ? this.hello.limits : null;
  }

  /** The signed-in user (null before the first `hello`). */
  get user() {
    return this.hello ? this.hello.user : null;
  }

  /** The server's clock now, estimated from `hello` (deadlines are on the server's clock). */
  serverNow() {
    return Date.now() + this._skewMs;
  }

  /** Whether a session is open and synced. */
  get ready() {
    return this.status === 'open' && this._synced;
  }

  /** @param {string} conversation @param {number} pos */
  _track(conversation, pos) {
    if ((this.positions.get(conversation) || 0) < pos) this.positions.set(conversation, pos);
  }

  /** Move a conversation's position past a frame that carries one. @param {ServerFrame} frame */
  _trackFrame(frame) {
    if (frame.type === 'message') this._track(frame.message.conversation, frame.message.seq);
    else if (frame.type === 'read' || frame.type === 'recalled' || frame.type === 'deleted-view') {
      this._track(frame.conversation, frame.pos);
    }
  }

  // -- connection -------------------------------------------------------------------------

  /** Open the connection (and keep it open until {@link ParleyClient#close}).
   * @throws {TypeError} when there is no WebSocket implementation to open it with. */
  connect() {
    if (!this._WS) throw noWebSocket();
    this._wanted = true;
    if (this._ws || this._retryTimer || this._opening) return;
    this._open();
  }

  /** Close for good: pending requests fail with `closed`, no reconnect. Positions are
   * kept, so a later {@link ParleyClient#connect} resyncs from where this one stopped. */
  close() {
    this._wanted = false;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'bye');
    this._failPending(() => true, 'closed', 'the client was closed');
    this._setStatus('closed');
  }

  /** Drop the current socket and reconnect now (say, when the network comes back). */
  reconnect() {
    if (!this._WS) throw noWebSocket();
    this._wanted = true;
    if (this._retryTimer) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._attempt = 0;
    const ws = this._ws;
    if (ws) {
      this._ws = null;
      ws.close(1000, 'reconnecting');
      this._lost();
    } else if (!this._opening) {
      this._open();
    }
  }

  async _open() {
    this._retryTimer = null;
    this._synced = false;
    this._setStatus('connecting');
    let url;
    this._opening = true;
    try {
      url = await this._url();
    } catch (e) {
      this._opening = false;
      this._emit('fatal', { type: 'error', code: 'unauthorized', message: String(e) });
      this._wanted = false;
      this._setStatus('closed');
      return;
    }
    this._opening = false;
    if (!this._wanted || !this._WS) return;
    let ws;
    try {
      ws = new this._WS(url);
    } catch (e) {
      // A malformed or forbidden URL: back off and retry like any failed connect.
      console.error('parley: cannot open a WebSocket', e);
      this._lost();
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => {
      if (this._ws === ws) this._onText(String(event.data));
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._lost(event.code, event.reason);
    };
    // An error is always followed by a close, which does the work.
    ws.onerror = () => {};
  }

  /** The socket is gone: fail what cannot be retried, then back off and reconnect.
   * @param {number} [code] @param {string} [reason] */
  _lost(code, reason) {
    this._synced = false;
    this._failPending(
      (p) => !resendable(p.request.type),
      'disconnected',
      'the connection was lost before an answer came',
    );
    for (const p of this._pending.values()) {
      if (p.timer) clearTimeout(p.timer);
      p.timer = null;
    }
    if (!this._wanted) {
      this._failPending(() => true, 'closed', 'the connection was closed');
      this._setStatus('closed', { code, reason });
      return;
    }
    const base = Math.min(
      this._opts.maxBackoffMs,
      this._opts.initialBackoffMs * 2 ** Math.min(this._attempt, 16),
    );
    // Full jitter keeps a crowd of clients from reconnecting in lockstep after a restart.
    const delay = this._attempt === 0 ? 0 : Math.round(base / 2 + Math.random() * (base / 2));
    this._attempt += 1;
    this._setStatus('waiting', { delay, code, reason });
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  /** @param {(p: Pending) => boolean} which @param {ClientErrorCode} code @param {string} message */
  _failPending(which, code, message) {
    for (const [id, p] of [...this._pending]) {
      if (!which(p)) continue;
      if (p.timer) clearTimeout(p.timer);
      this._pending.delete(id);
      p.reject(new ParleyError(code, message, id));
    }
  }

  /** @param {string} text */
  _onText(text) {
    /** @type {ServerFrame} */
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.error('parley: a frame that is not JSON', text);
      return;
    }
    if (frame.type === 'hello') return this._onHello(frame);
    if (frame.type === 'ack' || (frame.type === 'error' && frame.id)) {
      const id = /** @type {string} */ (frame.id);
      const p = this._pending.get(id);
      if (p) {
        this._pending.delete(id);
        if (p.timer) clearTimeout(p.timer);
        if (frame.type === 'ack') {
          if (frame.result.kind === 'sent') this._trackFrame({ type: 'message', message: frame.result.message });
          p.resolve(frame.result);
        } else {
          p.reject(new ParleyError(frame.code, frame.message, id));
        }
        return;
      }
    }
    if (frame.type === 'error' && !frame.id && FATAL_ERRORS.has(frame.code)) {
      this._wanted = false;
      this._emit('fatal', frame);
    }
    this._dispatch(frame, false);
  }

  /** @param {ServerFrame} frame @param {boolean} replayed */
  _dispatch(frame, replayed) {
    this._trackFrame(frame);
    const info = { replayed };
    this._emit('frame', frame, info);
    this._emit(frame.type, frame, info);
  }

  /** @param {HelloFrame} hello */
  async _onHello(hello) {
    if (hello.protocol !== PROTOCOL_VERSION) {
      console.warn(`parley: server speaks protocol ${hello.protocol}, this client ${PROTOCOL_VERSION}`);
    }
    const reconnected = this.hello !== null;
    this.hello = hello;
    this._skewMs = hello.server_time - Date.now();
    this._setStatus('open');
    this._emit('hello', hello);
    const unanswered = [...this._pending];
    try {
      const sync = await this._resync(reconnected);
      // Then what got no answer before the drop, with the same ids: the server recognises
      // them and answers without doing anything twice.
      for (const [id, p] of unanswered) {
        if (this._pending.get(id) === p && this.status === 'open') this._transmit(id, p);
      }
      this._attempt = 0;
      this._synced = true;
      this._emit('ready', { sync, reconnected });
    } catch (e) {
      if (e instanceof ParleyError && (e.code === 'disconnected' || e.code === 'closed')) return;
      console.error('parley: sync failed', e);
      this._ws?.close(1000, 'sync failed');
    }
  }

  /** Sync; on a reconnect, from the tracked positions, replaying updates until none has
   * `more`.
   * @param {boolean} withPositions
   * @returns {Promise<SyncResult>} the first answer, whose inbox is the current one */
  async _resync(withPositions) {
    let rounds = 0;
    /** @type {SyncResult | null} */
    let first = null;
    for (;;) {
      const req = withPositions ? { positions: Object.fromEntries(this.positions) } : {};
      const sync = await this.request('sync', req);
      if (!first) {
        first = sync;
        // Everything up to each inbox row's last message is reflected in this answer.
        for (const row of sync.inbox) {
          if (row.last_message) this._track(row.conversation.id, row.last_message.seq);
        }
        // Listeners rebuild lists from the inbox before the replayed frames arrive.
        this._emit('sync', sync, { reconnected: withPositions });
      }
      let more = false;
      for (const update of sync.updates || []) {
        this._emit('update', update);
        for (const frame of update.frames) this._dispatch(frame, true);
        this._track(update.conversation.id, update.pos);
        more = more || update.more;
      }
      rounds += 1;
      if (!more || rounds >= this._opts.maxSyncRounds) return first;
    }
  }

  // -- requests ---------------------------------------------------------------------------

  /**
   * Send one request and wait for its answer.
   * @template {Request['type']} T
   * @param {T} type
   * @param {RequestFields<T>} [fields] The request's fields besides `id` and `type`.
   * @returns {Promise<Answers[T]>} the ack's result; rejects with {@link ParleyError}.
   */
  request(type, fields) {
    const id = newRequestId();
    // What `fields` may hold is tied to `type` by RequestFields, which TypeScript cannot
    // follow through the spread.
    const request = /** @type {Request} */ ({ id, type, ...fields });
    const limits = this.limits;
    if (limits && 'body' in request && typeof request.body === 'string') {
      const n = bodyLength(request.body);
      if (n === 0 || n > limits.max_body_chars) {
        return Promise.reject(
          new ParleyError('body_too_long', `a message holds 1 to ${limits.max_body_chars} characters`),
        );
      }
    }
    const text = JSON.stringify(request);
    if (limits && new TextEncoder().encode(text).length > limits.max_frame_bytes) {
      return Promise.reject(
        new ParleyError('frame_too_large', `a request may be at most ${limits.max_frame_bytes} bytes`),
      );
    }
    const open = this.status === 'open';
    if (!open && !resendable(type)) {
      return Promise.reject(new ParleyError('disconnected', 'not connected; try again shortly'));
    }
    return new Promise((resolve, reject) => {
      // The server answers a request of type T with Answers[T].
      const settle = /** @type {(result: AckResult) => void} */ (resolve);
      /** @type {Pending} */
      const p = { request, text, resolve: settle, reject, timer: null };
      this._pending.set(id, p);
      // Requests made while offline wait for the next session, which transmits them.
      if (open) this._transmit(id, p);
    });
  }

  /** @param {string} id @param {Pending} p */
  _transmit(id, p) {
    if (p.timer) clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      if (this._pending.delete(id)) {
        p.reject(new ParleyError('timeout', 'no answer from the server', id));
      }
    }, this._opts.requestTimeoutMs);
    this._ws?.send(p.text);
  }

  // Each helper below is `request` with its fields spelled out; the answer types follow
  // from Answers.

  /** Send a message into a conversation (`conversation`) or to a connected user (`to`).
   * @param {RequestFields<'send'>} f */
  send(f) { return this.request('send', f); }
  /** Send an InMail. @param {RequestFields<'inmail'>} f */
  inmail(f) { return this.request('inmail', f); }
  /** Create a group. @param {RequestFields<'create_group'>} f */
  createGroup(f) { return this.request('create_group', f); }
  /** Mark read up to a message. @param {string} conversation @param {string} message */
  read(conversation, message) { return this.request('read', { conversation, message }); }
  /** Recall a message for everyone. @param {string} conversation @param {string} message */
  recall(conversation, message) { return this.request('recall', { conversation, message }); }
  /** Delete an InMail for sender and primary recipient. @param {string} conversation @param {string} message */
  deleteInmail(conversation, message) { return this.request('delete_inmail', { conversation, message }); }
  /** Delete a message from your own view. @param {string} conversation @param {string} message */
  deleteForMe(conversation, message) { return this.request('delete_for_me', { conversation, message }); }
  /** Ask to connect. @param {string} user */
  connectTo(user) { return this.request('connect', { user }); }
  /** Accept a connection request. @param {string} user */
  accept(user) { return this.request('accept', { user }); }
  /** Decline a connection request. @param {string} user */
  decline(user) { return this.request('decline', { user }); }
  /** Remove a connection or withdraw a request. @param {string} user */
  disconnectFrom(user) { return this.request('disconnect', { user }); }
  /** Block a user. @param {string} user */
  block(user) { return this.request('block', { user }); }
  /** Unblock a user. @param {string} user */
  unblock(user) { return this.request('unblock', { user }); }
  /** Report a message or a user. @param {ReportTarget} target @param {string} reason */
  report(target, reason) { return this.request('report', { target, reason }); }
  /** List reports (admins). */
  listReports() { return this.request('list_reports', {}); }
  /** Mute or unmute a conversation. @param {string} conversation @param {boolean} muted */
  mute(conversation, muted) { return this.request('mute', { conversation, muted }); }
  /** Hide or unhide a conversation. @param {string} conversation @param {boolean} hidden */
  hide(conversation, hidden) { return this.request('hide', { conversation, hidden }); }
  /** Change settings. @param {Partial<Settings>} settings */
  updateSettings(settings) { return this.request('settings', settings); }
  /** Say you are typing. @param {string} conversation */
  typing(conversation) { return this.request('typing', { conversation }); }
  /** Look a user up. @param {string} user */
  lookup(user) { return this.request('lookup', { user }); }
  /** Page back through a conversation.
   * @param {string} conversation
   * @param {{before?: number, limit?: number}} [page] */
  history(conversation, { before, limit } = {}) {
    /** @type {RequestFields<'history'>} */
    const fields = { conversation };
    if (before !== undefined) fields.before = before;
    if (limit !== undefined) fields.limit = limit;
    return this.request('history', fields);
  }
}

/** What `connect()` throws when there is nothing to open a socket with, instead of failing
 * and retrying forever. */
function noWebSocket() {
  return new TypeError(
    'parley: no WebSocket implementation: this runtime has no global WebSocket (Node has one ' +
      'only from version 22), so pass one as an option: ' +
      "new ParleyClient(url, { WebSocket }) with import { WebSocket } from 'ws'",
  );
}
