// parley-client.js — a small, dependency-free client for the parley WebSocket protocol.
//
// Copy this one file into any frontend. It speaks protocol version 1 as written in
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

/** Protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------
// Shared shapes
// ---------------------------------------------------------------------------------------

/**
 * Every limit in force, announced in `hello`. A window of 0 disables its feature.
 * @typedef {object} Limits
 * @property {number} recall_window_ms How long after sending a message may be recalled.
 * @property {number} inmail_delete_window_ms How long after sending an InMail may be deleted for everyone.
 * @property {number} recall_per_conversation Recalls per sender per conversation per period.
 * @property {number} recall_period_ms The period that allowance covers.
 * @property {number} recall_throttle_messages Senders above this many messages in the throttle window cannot recall.
 * @property {number} recall_throttle_window_ms The throttle window.
 * @property {number} max_body_chars Longest message body, in characters (code points).
 * @property {number} max_frame_bytes Largest frame the server accepts, in bytes.
 * @property {number} max_sessions_per_user Live sessions one user may hold.
 * @property {number} requests_per_second Sustained requests per second per user.
 * @property {number} request_burst Burst above the sustained rate.
 * @property {number} ping_interval_ms How often the server pings an idle connection.
 * @property {number} idle_timeout_ms A connection silent this long is closed.
 */

/**
 * @typedef {'everyone'|'connections'} WhoCanMessage
 * @typedef {'on'|'off'} ReadReceipts
 * @typedef {'full'|'sender_only'|'off'} NotificationPreview
 * @typedef {'none'|'requested'|'incoming'|'connected'} ConnectionState
 * @typedef {'direct'|'group'|'inmail'} ConversationKind
 * @typedef {'message'|'inmail'} MessageKind
 * @typedef {'visible'|'recalled'|'deleted'} MessageState
 * @typedef {'marker'|'silent'} RemovalMode
 * @typedef {'expired'|'read'} RecallClosedReason
 * @typedef {'recalled'|'deleted'|'read'} RetractReason
 */

/**
 * A user's settings.
 * @typedef {object} Settings
 * @property {WhoCanMessage} who_can_message
 * @property {ReadReceipts} read_receipts
 * @property {NotificationPreview} notification_preview
 */

/**
 * A message as the viewer sees it.
 * @typedef {object} MessageView
 * @property {string} id Server-made id.
 * @property {string} conversation Conversation id.
 * @property {number} seq Position in the conversation (shared with state changes).
 * @property {string} sender
 * @property {number} sent_at Server send time, ms since the epoch.
 * @property {MessageKind} kind
 * @property {MessageState} state
 * @property {string} [body] Absent for recall markers and tombstones.
 * @property {string} [reply_to] Parent message id.
 * @property {string} [to] InMail primary recipient.
 * @property {string[]} [cc] InMail copied recipients.
 * @property {number} [recall_until] When the recall window closes (messages).
 * @property {number} [delete_until] When the InMail delete window closes (InMail).
 */

/**
 * @typedef {object} ConversationView
 * @property {string} id
 * @property {ConversationKind} kind
 * @property {string[]} participants Creator first.
 * @property {string} [title] Group title.
 */

/**
 * One row of the inbox.
 * @typedef {object} InboxEntry
 * @property {ConversationView} conversation
 * @property {MessageView} [last_message]
 * @property {number} unread
 * @property {boolean} muted
 * @property {boolean} hidden
 */

/**
 * What changed in one conversation since a position.
 * @typedef {object} ConversationUpdate
 * @property {ConversationView} conversation
 * @property {Array<MessageFrame|ReadFrame|RecalledFrame|DeletedViewFrame>} frames
 * @property {number} pos The position these frames bring you to.
 * @property {boolean} more Whether more changes follow.
 */

/**
 * @typedef {object} Receipt
 * @property {string} user
 * @property {string} message
 * @property {number} seq
 */

/**
 * @typedef {object} NotificationView
 * @property {string} conversation
 * @property {string} message
 * @property {string} [sender] Absent when the preview setting is `off`.
 * @property {string} [preview] Present only when the preview setting is `full`.
 * @property {number} sent_at
 */

/**
 * @typedef {{kind: 'message', conversation: string, message: string} | {kind: 'user', user: string}} ReportTarget
 */

/**
 * @typedef {object} ReportView
 * @property {string} id
 * @property {string} reporter
 * @property {ReportTarget} target
 * @property {string} reason
 * @property {number} at
 * @property {MessageView} [snapshot]
 */

// ---------------------------------------------------------------------------------------
// Requests (client → server). Each carries a client-chosen `id`, answered by one
// `ack` or `error` with the same id.
// ---------------------------------------------------------------------------------------

/**
 * @typedef {{id: string, type: 'send', conversation?: string, to?: string, body: string, reply_to?: string}} SendRequest
 * @typedef {{id: string, type: 'inmail', to: string, cc?: string[], body: string}} InmailRequest
 * @typedef {{id: string, type: 'create_group', members: string[], title?: string}} CreateGroupRequest
 * @typedef {{id: string, type: 'read', conversation: string, message: string}} ReadRequest
 * @typedef {{id: string, type: 'recall', conversation: string, message: string}} RecallRequest
 * @typedef {{id: string, type: 'delete_inmail', conversation: string, message: string}} DeleteInmailRequest
 * @typedef {{id: string, type: 'delete_for_me', conversation: string, message: string}} DeleteForMeRequest
 * @typedef {{id: string, type: 'connect', user: string}} ConnectRequest
 * @typedef {{id: string, type: 'accept', user: string}} AcceptRequest
 * @typedef {{id: string, type: 'decline', user: string}} DeclineRequest
 * @typedef {{id: string, type: 'disconnect', user: string}} DisconnectRequest
 * @typedef {{id: string, type: 'block', user: string}} BlockRequest
 * @typedef {{id: string, type: 'unblock', user: string}} UnblockRequest
 * @typedef {{id: string, type: 'report', target: ReportTarget, reason: string}} ReportRequest
 * @typedef {{id: string, type: 'list_reports'}} ListReportsRequest
 * @typedef {{id: string, type: 'mute', conversation: string, muted: boolean}} MuteRequest
 * @typedef {{id: string, type: 'hide', conversation: string, hidden: boolean}} HideRequest
 * @typedef {{id: string, type: 'settings', who_can_message?: WhoCanMessage, read_receipts?: ReadReceipts, notification_preview?: NotificationPreview}} SettingsRequest
 * @typedef {{id: string, type: 'typing', conversation: string}} TypingRequest
 * @typedef {{id: string, type: 'lookup', user: string}} LookupRequest
 * @typedef {{id: string, type: 'sync', positions?: Object<string, number>}} SyncRequest
 * @typedef {{id: string, type: 'history', conversation: string, before?: number, limit?: number}} HistoryRequest
 *
 * @typedef {SendRequest|InmailRequest|CreateGroupRequest|ReadRequest|RecallRequest|DeleteInmailRequest|DeleteForMeRequest|ConnectRequest|AcceptRequest|DeclineRequest|DisconnectRequest|BlockRequest|UnblockRequest|ReportRequest|ListReportsRequest|MuteRequest|HideRequest|SettingsRequest|TypingRequest|LookupRequest|SyncRequest|HistoryRequest} Request
 */

// ---------------------------------------------------------------------------------------
// Acknowledgement results, by `kind`.
// ---------------------------------------------------------------------------------------

/**
 * @typedef {{kind: 'ok'}} OkResult
 * @typedef {{kind: 'sent', message: MessageView}} SentResult
 * @typedef {{kind: 'conversation', conversation: ConversationView}} ConversationResult
 * @typedef {{kind: 'connection', user: string, state: ConnectionState}} ConnectionResult
 * @typedef {{kind: 'settings', settings: Settings}} SettingsResult
 * @typedef {{kind: 'reported', report: string}} ReportedResult
 * @typedef {{kind: 'reports', reports: ReportView[]}} ReportsResult
 * @typedef {{kind: 'profile', user: string, connection: ConnectionState, inmail_allowed: boolean}} ProfileResult
 * @typedef {{kind: 'sync', inbox: InboxEntry[], notifications: NotificationView[], connections: string[], incoming_requests: string[], outgoing_requests: string[], blocked: string[], settings: Settings, updates?: ConversationUpdate[]}} SyncResult
 * @typedef {{kind: 'history', conversation: ConversationView, messages: MessageView[], receipts: Receipt[], more: boolean}} HistoryResult
 *
 * @typedef {OkResult|SentResult|ConversationResult|ConnectionResult|SettingsResult|ReportedResult|ReportsResult|ProfileResult|SyncResult|HistoryResult} AckResult
 */

// ---------------------------------------------------------------------------------------
// Server frames (server → client), by `type`.
// ---------------------------------------------------------------------------------------

/**
 * @typedef {{type: 'hello', protocol: number, user: string, session: string, server_time: number, limits: Limits, settings: Settings}} HelloFrame
 * @typedef {{type: 'ack', id: string, result: AckResult}} AckFrame
 * @typedef {{type: 'error', id?: string, code: string, message: string}} ErrorFrame
 * @typedef {{type: 'message', message: MessageView}} MessageFrame
 * @typedef {{type: 'read', conversation: string, user: string, message: string, seq: number, pos: number}} ReadFrame
 * @typedef {{type: 'recalled', conversation: string, message: string, mode: RemovalMode, pos: number}} RecalledFrame
 * @typedef {{type: 'deleted-view', conversation: string, message: string, pos: number}} DeletedViewFrame
 * @typedef {{type: 'recall_closed', conversation: string, message: string, reason: RecallClosedReason}} RecallClosedFrame
 * @typedef {{type: 'blocked', user: string}} BlockedFrame
 * @typedef {{type: 'unblocked', user: string}} UnblockedFrame
 * @typedef {{type: 'connection_request', from: string}} ConnectionRequestFrame
 * @typedef {{type: 'connected', user: string}} ConnectedFrame
 * @typedef {{type: 'disconnected', user: string}} DisconnectedFrame
 * @typedef {{type: 'conversation', conversation: ConversationView}} ConversationFrame
 * @typedef {{type: 'conversation_state', conversation: string, muted: boolean, hidden: boolean}} ConversationStateFrame
 * @typedef {{type: 'settings', settings: Settings}} SettingsFrame
 * @typedef {{type: 'notification', notification: NotificationView}} NotificationFrame
 * @typedef {{type: 'notification_retracted', conversation: string, messages: string[], reason: RetractReason}} NotificationRetractedFrame
 * @typedef {{type: 'typing', conversation: string, user: string}} TypingFrame
 *
 * @typedef {HelloFrame|AckFrame|ErrorFrame|MessageFrame|ReadFrame|RecalledFrame|DeletedViewFrame|RecallClosedFrame|BlockedFrame|UnblockedFrame|ConnectionRequestFrame|ConnectedFrame|DisconnectedFrame|ConversationFrame|ConversationStateFrame|SettingsFrame|NotificationFrame|NotificationRetractedFrame|TypingFrame} ServerFrame
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
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (defaults to the global one).
 */

/** A refused or failed request. `code` is a protocol error code, or one of the client's own:
 * `disconnected`, `timeout`, `closed`, `body_too_long`, `frame_too_large`. */
export class ParleyError extends Error {
  /**
   * @param {string} code
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
const NOT_RESENT = new Set(['recall', 'delete_inmail', 'typing', 'sync']);
const resendable = (type) => !NOT_RESENT.has(type);

/** Frame types that move a conversation's position. */
const POSITIONED = new Set(['read', 'recalled', 'deleted-view']);

/** A request id unique across tabs, devices and reloads: the server deduplicates `send` by
 * id, so reusing an old one would silently return the old message. */
function newRequestId() {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return 'c-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Length in characters as the server counts them (Unicode scalar values). */
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
    this._WS = options.WebSocket || globalThis.WebSocket;
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
    /** @type {Map<string, {request: Request, resolve: Function, reject: Function, timer: any}>} */
    this._pending = new Map();
    /** @type {Map<string, number>} last position seen per conversation */
    this.positions = new Map();
    /** @type {HelloFrame | null} */
    this.hello = null;
    /** @type {ConnectionStatus} */
    this.status = 'idle';
    this._ws = null;
    this._attempt = 0;
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
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this._handlers.get(event)?.delete(handler);
  }

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

  _track(conversation, pos) {
    if (typeof pos !== 'number') return;
    if ((this.positions.get(conversation) || 0) < pos) this.positions.set(conversation, pos);
  }

  _trackFrame(frame) {
    if (frame.type === 'message') this._track(frame.message.conversation, frame.message.seq);
    else if (POSITIONED.has(frame.type)) this._track(frame.conversation, frame.pos);
  }

  // -- connection -------------------------------------------------------------------------

  /** Open the connection (and keep it open until {@link ParleyClient#close}). */
  connect() {
    this._wanted = true;
    if (this._ws || this._retryTimer || this._opening) return;
    this._open();
  }

  /** Close for good: pending requests fail with `closed`, no reconnect. Positions are
   * kept, so a later {@link ParleyClient#connect} resyncs from where this one stopped. */
  close() {
    this._wanted = false;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, 'bye');
    this._failPending(() => true, 'closed', 'the client was closed');
    this._setStatus('closed');
  }

  /** Drop the current socket and reconnect now (say, when the network comes back). */
  reconnect() {
    this._wanted = true;
    clearTimeout(this._retryTimer);
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
    if (!this._wanted) return;
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
      if (this._ws === ws) this._onText(event.data);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._lost(event.code, event.reason);
    };
    // An error is always followed by a close, which does the work.
    ws.onerror = () => {};
  }

  /** The socket is gone: fail what cannot be retried, then back off and reconnect. */
  _lost(code, reason) {
    this._synced = false;
    this._failPending(
      (p) => !resendable(p.request.type),
      'disconnected',
      'the connection was lost before an answer came',
    );
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
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

  _failPending(which, code, message) {
    for (const [id, p] of [...this._pending]) {
      if (!which(p)) continue;
      clearTimeout(p.timer);
      this._pending.delete(id);
      p.reject(new ParleyError(code, message, id));
    }
  }

  _onText(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.error('parley: a frame that is not JSON', text);
      return;
    }
    if (frame.type === 'hello') return this._onHello(frame);
    if (frame.type === 'ack' || (frame.type === 'error' && frame.id)) {
      const p = this._pending.get(frame.id);
      if (p) {
        this._pending.delete(frame.id);
        clearTimeout(p.timer);
        if (frame.type === 'ack') {
          if (frame.result.kind === 'sent') this._trackFrame({ type: 'message', message: frame.result.message });
          p.resolve(frame.result);
        } else {
          p.reject(new ParleyError(frame.code, frame.message, frame.id));
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

  _dispatch(frame, replayed) {
    this._trackFrame(frame);
    const info = { replayed };
    this._emit('frame', frame, info);
    this._emit(frame.type, frame, info);
  }

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
   * `more`. */
  async _resync(withPositions) {
    let rounds = 0;
    let sync;
    let first = null;
    for (;;) {
      const req = withPositions ? { positions: Object.fromEntries(this.positions) } : {};
      sync = await this.request('sync', req);
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
   * @param {Request['type']} type
   * @param {object} [fields] The request's fields besides `id` and `type`.
   * @returns {Promise<AckResult>} the ack's result; rejects with {@link ParleyError}.
   */
  request(type, fields = {}) {
    const id = newRequestId();
    /** @type {Request} */
    const request = { id, type, ...fields };
    const limits = this.limits;
    if (limits && typeof request.body === 'string') {
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
      const p = { request, text, resolve, reject, timer: null };
      this._pending.set(id, p);
      // Requests made while offline wait for the next session, which transmits them.
      if (open) this._transmit(id, p);
    });
  }

  _transmit(id, p) {
    clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      if (this._pending.delete(id)) {
        p.reject(new ParleyError('timeout', 'no answer from the server', id));
      }
    }, this._opts.requestTimeoutMs);
    this._ws.send(p.text);
  }

  /** Send a message into a conversation (`conversation`) or to a connected user (`to`).
   * @param {{conversation?: string, to?: string, body: string, reply_to?: string}} f
   * @returns {Promise<SentResult>} */
  send(f) { return this.request('send', f); }
  /** Send an InMail. @param {{to: string, cc?: string[], body: string}} f @returns {Promise<SentResult>} */
  inmail(f) { return this.request('inmail', f); }
  /** Create a group. @param {{members: string[], title?: string}} f @returns {Promise<ConversationResult>} */
  createGroup(f) { return this.request('create_group', f); }
  /** Mark read up to a message. @returns {Promise<OkResult>} */
  read(conversation, message) { return this.request('read', { conversation, message }); }
  /** Recall a message for everyone. @returns {Promise<OkResult>} */
  recall(conversation, message) { return this.request('recall', { conversation, message }); }
  /** Delete an InMail for sender and primary recipient. @returns {Promise<OkResult>} */
  deleteInmail(conversation, message) { return this.request('delete_inmail', { conversation, message }); }
  /** Delete a message from your own view. @returns {Promise<OkResult>} */
  deleteForMe(conversation, message) { return this.request('delete_for_me', { conversation, message }); }
  /** Ask to connect. @returns {Promise<ConnectionResult>} */
  connectTo(user) { return this.request('connect', { user }); }
  /** Accept a connection request. @returns {Promise<ConnectionResult>} */
  accept(user) { return this.request('accept', { user }); }
  /** Decline a connection request. @returns {Promise<ConnectionResult>} */
  decline(user) { return this.request('decline', { user }); }
  /** Remove a connection or withdraw a request. @returns {Promise<ConnectionResult>} */
  disconnectFrom(user) { return this.request('disconnect', { user }); }
  /** Block a user. @returns {Promise<OkResult>} */
  block(user) { return this.request('block', { user }); }
  /** Unblock a user. @returns {Promise<OkResult>} */
  unblock(user) { return this.request('unblock', { user }); }
  /** Report a message or a user. @param {ReportTarget} target @returns {Promise<ReportedResult>} */
  report(target, reason) { return this.request('report', { target, reason }); }
  /** List reports (admins). @returns {Promise<ReportsResult>} */
  listReports() { return this.request('list_reports'); }
  /** Mute or unmute a conversation. @returns {Promise<OkResult>} */
  mute(conversation, muted) { return this.request('mute', { conversation, muted }); }
  /** Hide or unhide a conversation. @returns {Promise<OkResult>} */
  hide(conversation, hidden) { return this.request('hide', { conversation, hidden }); }
  /** Change settings. @param {Partial<Settings>} settings @returns {Promise<SettingsResult>} */
  updateSettings(settings) { return this.request('settings', settings); }
  /** Say you are typing. @returns {Promise<OkResult>} */
  typing(conversation) { return this.request('typing', { conversation }); }
  /** Look a user up. @returns {Promise<ProfileResult>} */
  lookup(user) { return this.request('lookup', { user }); }
  /** Page back through a conversation. @returns {Promise<HistoryResult>} */
  history(conversation, { before, limit } = {}) {
    const fields = { conversation };
    if (before !== undefined) fields.before = before;
    if (limit !== undefined) fields.limit = limit;
    return this.request('history', fields);
  }
}
