// The parley web chat page. Plain DOM, no framework: state lives in a few maps, and each
// change re-renders the small part of the page it touches. Everything the page knows comes
// from the documented protocol through parley-client.js.

import { ParleyClient, ParleyError, bodyLength } from './parley-client.js';

const TOKEN_KEY = 'parley.token';
/** How long someone counts as typing after their last `typing` frame. */
const TYPING_SHOWN_MS = 4000;
/** Least time between two `typing` requests of ours. */
const TYPING_EVERY_MS = 3000;
/** Messages per history request: the server's largest page. */
const HISTORY_PAGE = 100;
/** Most messages the DOM holds at once; the rest of the history stays in memory. */
const WINDOW_MAX = 150;
/** Messages added to the window each time scrolling reaches one of its ends. */
const WINDOW_STEP = 50;
/** How near an end of the list (in pixels) scrolling widens the window. */
const EDGE_PX = 400;

const $ = (id) => document.getElementById(id);

/** Build an element; children may be strings (always text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

const state = {
  /** @type {ParleyClient|null} */
  client: null,
  me: null,
  limits: null,
  settings: null,
  /** @type {Map<string, Conv>} */
  convs: new Map(),
  connections: new Set(),
  incoming: new Set(),
  outgoing: new Set(),
  blocked: new Set(),
  /** Open conversation id, or `{draft: user}` for a first direct message. */
  open: null,
  /** Messages of ours for which the server said recall is gone. */
  recallClosed: new Set(),
  /** Reply target in the composer. */
  replyTo: null,
  profile: null,
  lastTypingSent: 0,
  /** Notification toasts by message id. */
  toasts: new Map(),
  sendingSeq: 0,
  /** The rendered window onto the open thread (see windowOf). */
  win: null,
  /** A message arrived below the part of the thread in view. */
  unseenBelow: false,
  /** Whether the recall throttle held at the last tick (Recall returns when it lifts). */
  throttled: false,
};

/**
 * @typedef {object} Conv
 * @property {import('./parley-client.js').ConversationView} view
 * @property {import('./parley-client.js').MessageView|null} last
 * @property {number} activity
 * @property {number} baseUnread unread count from the last sync
 * @property {number} baseSeq last message seq at the last sync
 * @property {Map<string, number>} unreadLive message id → seq, arrived since
 * @property {number} myRead
 * @property {number} readSent
 * @property {boolean} muted
 * @property {boolean} hidden
 * @property {Map<string, object>|null} msgs loaded messages, or null
 * @property {boolean} more
 * @property {Map<string, number>} receipts
 * @property {Map<string, number>} recalls our recalls here: message id → when (server clock)
 * @property {Map<string, number>} typing user → until
 * @property {Array<{key: number, body: string}>} pending
 */

function ensureConv(view) {
  let c = state.convs.get(view.id);
  if (!c) {
    c = {
      view,
      last: null,
      activity: 0,
      baseUnread: 0,
      baseSeq: 0,
      unreadLive: new Map(),
      myRead: 0,
      readSent: 0,
      muted: false,
      hidden: false,
      msgs: null,
      more: false,
      receipts: new Map(),
      recalls: new Map(),
      typing: new Map(),
      pending: [],
    };
    state.convs.set(view.id, c);
  } else if (view.participants) {
    c.view = view;
  }
  return c;
}

function unreadOf(c) {
  return c.baseUnread + c.unreadLive.size;
}

function others(c) {
  return c.view.participants.filter((p) => p !== state.me);
}

function convTitle(c) {
  if (c.view.kind === 'group') return c.view.title || others(c).join(', ');
  return others(c).join(', ') || state.me;
}

function otherOne(c) {
  const o = others(c);
  return c.view.kind !== 'group' && o.length >= 1 ? o[0] : null;
}

function sortedMessages(c) {
  return [...(c.msgs?.values() || [])].sort((a, b) => a.seq - b.seq);
}

function upsertMessage(c, m) {
  if (c.msgs) c.msgs.set(m.id, m);
  if (m.sender === state.me) noteOwnMessage(c, m);
  if (!c.last || m.seq >= c.last.seq) c.last = m;
  c.activity = Math.max(c.activity, m.sent_at);
}

// ---------------------------------------------------------------------------------------
// Recall limits: the page offers Recall only where the server would allow it. It knows the
// limits from `hello` and its user's messages and recalls from what it has seen.
// ---------------------------------------------------------------------------------------

/** Send times of the user's own messages, every conversation and session: the throttle. */
const ownSends = new Map();

function noteOwnMessage(c, m) {
  ownSends.set(m.id, m.sent_at);
  // A recall seen only as a marker happened within the recall window after sending; count
  // it from the window's end, so the allowance is never thought free too early.
  if (m.state === 'recalled' && !c.recalls.has(m.id)) c.recalls.set(m.id, m.sent_at + (state.limits?.recall_window_ms ?? 0));
}

function noteOwnRecall(c, id) {
  c.recalls.set(id, state.client.serverNow());
}

/** The per-conversation allowance is used up (`recall_limit_reached` would follow). */
function recallAllowanceUsed(c) {
  if (!state.limits) return false;
  const { recall_per_conversation: allowed, recall_period_ms: period } = state.limits;
  if (allowed === 0) return true;
  if (period === 0) return false;
  const since = state.client.serverNow() - period;
  let used = 0;
  for (const at of c.recalls.values()) if (at > since) used += 1;
  return used >= allowed;
}

/** More messages sent lately than the throttle allows (`recall_throttled` would follow). */
function recallThrottled() {
  // Before hello there are no limits to count against, and nothing to recall either.
  if (!state.limits) return false;
  const { recall_throttle_messages: most, recall_throttle_window_ms: windowMs } = state.limits;
  if (windowMs === 0) return false;
  const since = state.client.serverNow() - windowMs;
  let sent = 0;
  for (const at of ownSends.values()) if (at > since) sent += 1;
  return sent > most;
}

function readByOthersUpTo(c) {
  let max = 0;
  for (const seq of c.receipts.values()) max = Math.max(max, seq);
  return max;
}

// ---------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** The time of day, and the date too unless it is today. */
function stamp(ms) {
  const d = new Date(ms);
  if (d.toDateString() === new Date().toDateString()) return clock(ms);
  const sameYear = d.getFullYear() === new Date().getFullYear();
  const date = d.toLocaleDateString([], { day: 'numeric', month: 'short', year: sameYear ? undefined : 'numeric' });
  return `${date}, ${clock(ms)}`;
}

/** Time left until a deadline on the server's clock; never more than the whole window,
 * which the clock estimate taken from `hello` could otherwise suggest. */
function timeLeft(until, windowMs) {
  return Math.min(until - state.client.serverNow(), windowMs);
}

function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, '0')}`;
}

function span(ms) {
  const s = Math.round(ms / 1000);
  if (s % 86400 === 0) return s === 86400 ? 'day' : `${s / 86400} days`;
  if (s % 3600 === 0) return s === 3600 ? 'hour' : `${s / 3600} hours`;
  if (s % 60 === 0) return s === 60 ? 'minute' : `${s / 60} minutes`;
  return `${s} seconds`;
}

/** Words a person can act on for each error code; limits come from `hello`. */
function explain(err) {
  const code = err instanceof ParleyError ? err.code : 'error';
  const l = state.limits || {};
  switch (code) {
    case 'recipient_unavailable':
      return 'This person can’t receive messages from you right now.';
    case 'not_connected':
      return 'You need to be connected to message this person directly. Send an InMail instead.';
    case 'inmail_not_allowed':
      return 'This person accepts InMail from their connections only.';
    case 'already_read':
      return 'Too late to recall: it has been read.';
    case 'recall_window_closed':
      return 'The time to recall this message has run out.';
    case 'recall_limit_reached':
      return `You can recall ${l.recall_per_conversation} message${l.recall_per_conversation === 1 ? '' : 's'} per conversation each ${span(l.recall_period_ms)}.`;
    case 'recall_throttled':
      return `You sent more than ${l.recall_throttle_messages} messages in the last ${span(l.recall_throttle_window_ms)}, so recall is paused for now.`;
    case 'inmail_delete_window_closed':
      return 'The time to delete this InMail for everyone has run out.';
    case 'body_too_long':
      return `A message holds 1 to ${l.max_body_chars} characters.`;
    case 'rate_limited':
      return 'You are going a little fast. Try again in a moment.';
    case 'unavailable':
      return 'The server could not save that just now. Nothing was sent; try again in a moment.';
    case 'disconnected':
    case 'timeout':
      return 'No connection to the server right now. Try again in a moment.';
    case 'not_found':
      return 'That is no longer available.';
    default:
      return err.message || String(err);
  }
}

// ---------------------------------------------------------------------------------------
// Toasts
// ---------------------------------------------------------------------------------------

/** Most toasts shown at once; a new one retires the oldest. */
const MAX_TOASTS = 3;

/** A note in the strip under the top bar: it takes its own space, so it never covers a control. */
function toast(text, { kind = 'info', key, onclick, ttl = kind === 'error' ? 6000 : 4000 } = {}) {
  const el = h(
    'div',
    { class: `toast ${kind}`, testid: 'toast', role: kind === 'error' ? 'alert' : 'status' },
    onclick ? h('button', { type: 'button', class: 'link', onclick: () => { onclick(); dropToast(el, key); } }, text) : h('span', {}, text),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => dropToast(el, key) }, '×'),
  );
  $('toasts').append(el);
  if (key) state.toasts.set(key, el);
  el.toastKey = key;
  while ($('toasts').children.length > MAX_TOASTS) {
    const oldest = $('toasts').firstElementChild;
    dropToast(oldest, oldest.toastKey);
  }
  if (ttl) setTimeout(() => dropToast(el, key), ttl);
  return el;
}

function dropToast(el, key) {
  el.remove();
  if (key && state.toasts.get(key) === el) state.toasts.delete(key);
}

/** Tell screen readers about a change in the open thread; the list itself is re-rendered
 * whole, so it cannot be a live region without repeating everything. */
function announce(text) {
  $('announcer').textContent = text;
}

function fail(err) {
  toast(explain(err), { kind: 'error' });
}

// ---------------------------------------------------------------------------------------
// Rendering: status, sidebar
// ---------------------------------------------------------------------------------------

function renderStatus(status, detail) {
  const el = $('status');
  el.dataset.status = status;
  const text = {
    idle: 'Signed out',
    connecting: 'Connecting…',
    open: 'Online',
    waiting: detail?.delay ? `Offline · retrying in ${Math.ceil(detail.delay / 1000)} s` : 'Reconnecting…',
    closed: 'Offline',
  }[status];
  el.textContent = text;
}

function renderTitle() {
  let total = 0;
  for (const c of state.convs.values()) if (!c.hidden && !c.muted) total += unreadOf(c);
  document.title = total ? `(${total}) parley` : 'parley';
}

/** Conversation rows by conversation id, rebuilt only when what they show changes. */
const convRows = new Map();

function renderList() {
  const rows = [...state.convs.values()]
    .filter((c) => !c.hidden)
    .sort((a, b) => b.activity - a.activity);
  const items = rows.map((c) => {
    const row = {
      title: convTitle(c),
      with: others(c).join(','),
      kind: c.view.kind,
      open: state.open === c.view.id,
      unread: unreadOf(c),
      preview: previewOf(c),
      muted: c.muted,
    };
    return { key: c.view.id, sig: JSON.stringify(row), build: () => convRow(c, row) };
  });
  reconcile($('conversation-list'), items, convRows);
  $('conv-empty').hidden = rows.length > 0;
  renderTitle();
}

function previewOf(c) {
  const last = c.last;
  if (!last) return '';
  const who = last.sender === state.me ? 'You: ' : c.view.kind === 'group' ? `${last.sender}: ` : '';
  return last.state === 'recalled' ? `${last.sender === state.me ? 'You' : last.sender} recalled a message`
    : last.state === 'deleted' ? 'This message has been deleted'
    : who + (last.body || '');
}

function convRow(c, { title, with: withUsers, kind, open, unread, preview, muted }) {
  return h(
    'li',
    {},
    h(
      'button',
      {
        type: 'button',
        class: `conv${open ? ' open' : ''}${unread ? ' unread' : ''}`,
        testid: 'conversation',
        dataset: { conversation: c.view.id, with: withUsers },
        'aria-current': open ? 'true' : null,
        onclick: () => openConversation(c.view.id),
      },
      h(
        'span',
        { class: 'conv-top' },
        h('span', { class: 'conv-name', testid: 'conversation-name', dir: 'auto' }, title),
        kind === 'inmail' ? h('span', { class: 'badge' }, 'InMail') : null,
        muted ? h('span', { class: 'badge muted', testid: 'muted-badge', title: 'Muted' }, 'Muted') : null,
        unread
          ? h('span', { class: 'count', testid: 'unread', 'aria-label': `${unread} unread` }, String(unread))
          : null,
      ),
      h('span', { class: 'conv-preview', testid: 'conversation-preview', dir: 'auto' }, preview || 'No messages yet'),
    ),
  );
}

function personRow(user, ...actions) {
  return h('li', { class: 'person', testid: 'person', dataset: { user } }, h('span', { class: 'person-name' }, user), h('span', { class: 'person-actions' }, ...actions));
}

function act(label, testid, fn, cls = 'small') {
  return h('button', {
    type: 'button',
    class: cls,
    testid,
    onclick: async (e) => {
      const b = e.currentTarget;
      b.disabled = true;
      try {
        await fn();
      } catch (err) {
        fail(err);
      } finally {
        b.disabled = false;
      }
    },
  }, label);
}

/** Apply a `connection` ack: our own session gets no `connected`/`disconnected` frame. */
function applyConnection({ user, state: st }) {
  if (st !== 'incoming') dropToastFor(`request:${user}`);
  for (const set of [state.connections, state.incoming, state.outgoing]) set.delete(user);
  if (st === 'connected') state.connections.add(user);
  if (st === 'incoming') state.incoming.add(user);
  if (st === 'requested') state.outgoing.add(user);
  renderPeople();
  renderThread();
}

/** Connection requests, each answered with the new state. */
const relation = {
  connect: (u) => state.client.connectTo(u).then(applyConnection),
  accept: (u) => state.client.accept(u).then(applyConnection),
  decline: (u) => state.client.decline(u).then(applyConnection),
  disconnect: (u) => state.client.disconnectFrom(u).then(applyConnection),
};

function renderPeople() {
  $('requests').replaceChildren(
    ...[...state.incoming].sort().map((u) =>
      personRow(
        u,
        act('Accept', 'accept-request', () => relation.accept(u)),
        act('Decline', 'decline-request', () => relation.decline(u), 'small quiet'),
      )),
  );
  $('requests-panel').hidden = state.incoming.size === 0;
  $('connections').replaceChildren(
    ...[...state.connections].sort().map((u) => personRow(u, act('Message', 'message-connection', () => openDirect(u)))),
  );
  $('connections-empty').hidden = state.connections.size > 0;
  $('outgoing').replaceChildren(
    ...[...state.outgoing].sort().map((u) =>
      personRow(u, act('Withdraw', 'withdraw-request', () => relation.disconnect(u), 'small quiet'))),
  );
  $('sent-panel').hidden = state.outgoing.size === 0;
  $('blocked').replaceChildren(
    ...[...state.blocked].sort().map((u) => personRow(u, act('Unblock', 'unblock', () => unblock(u)))),
  );
  $('blocked-panel').hidden = state.blocked.size === 0;
  renderProfile();
}

async function lookup(user) {
  try {
    state.profile = await state.client.lookup(user);
  } catch (err) {
    state.profile = { user, error: err };
  }
  renderProfile();
}

function renderProfile() {
  const box = $('profile');
  const p = state.profile;
  box.hidden = !p;
  if (!p) return;
  if (p.error) {
    box.replaceChildren(
      h('p', { class: 'hint' }, p.error.code === 'not_found' ? `No one called “${p.user}” can be found.` : explain(p.error)),
    );
    return;
  }
  const u = p.user;
  const blocked = state.blocked.has(u);
  const refresh = () => lookup(u);
  const stateText = {
    none: 'Not connected',
    requested: 'Request sent',
    incoming: 'Wants to connect with you',
    connected: 'Connected',
  }[p.connection];
  const actions = [];
  if (u === state.me) {
    box.replaceChildren(h('p', { class: 'hint' }, 'That’s you.'));
    return;
  }
  if (!blocked) {
    const then = (op) => async () => { await relation[op](u); await refresh(); };
    if (p.connection === 'none') actions.push(act('Connect', 'connect', then('connect'), 'small primary'));
    if (p.connection === 'requested') actions.push(act('Withdraw request', 'withdraw', then('disconnect')));
    if (p.connection === 'incoming') {
      actions.push(act('Accept', 'accept', then('accept'), 'small primary'));
      actions.push(act('Decline', 'decline', then('decline')));
    }
    if (p.connection === 'connected') {
      actions.push(act('Message', 'profile-message', () => openDirect(u), 'small primary'));
      actions.push(act('Remove connection', 'remove-connection', then('disconnect')));
    }
    if (p.connection !== 'connected' && p.inmail_allowed) actions.push(act('InMail', 'profile-inmail', () => openInmail(u)));
  }
  actions.push(blocked ? act('Unblock', 'profile-unblock', async () => { await unblock(u); await refresh(); }) : act('Block', 'profile-block', async () => { await block(u); await refresh(); }, 'small danger'));
  actions.push(act('Report', 'profile-report', () => openReport({ kind: 'user', user: u }, `Report ${u}`), 'small quiet'));
  box.replaceChildren(
    h('p', { class: 'profile-name' }, h('strong', {}, u), ' · ', h('span', { testid: 'profile-state' }, blocked ? 'Blocked by you' : stateText)),
    h('div', { class: 'person-actions' }, ...actions),
  );
}

async function block(user) {
  await state.client.block(user);
  state.blocked.add(user);
  state.connections.delete(user);
  renderPeople();
  renderThread();
  toast(`You blocked ${user}. They can’t message you, and they are not told.`);
}

async function unblock(user) {
  await state.client.unblock(user);
  state.blocked.delete(user);
  renderPeople();
  renderThread();
}

// ---------------------------------------------------------------------------------------
// Rendering: the thread
// ---------------------------------------------------------------------------------------

function openConv() {
  return typeof state.open === 'string' ? state.convs.get(state.open) : null;
}

async function openConversation(id) {
  state.open = id;
  state.replyTo = null;
  const c = state.convs.get(id);
  renderList();
  renderThread({ focus: true, bottom: true });
  if (c && !c.msgs) await loadHistory(c);
  maybeRead(c);
}

async function loadHistory(c, before) {
  let page;
  try {
    page = await state.client.history(c.view.id, { before, limit: HISTORY_PAGE });
  } catch (err) {
    fail(err);
    return;
  }
  ensureConv(page.conversation);
  if (!c.msgs) c.msgs = new Map();
  for (const m of page.messages) upsertMessage(c, m);
  if (before === undefined || !page.more) c.more = page.more;
  for (const r of page.receipts) c.receipts.set(r.user, Math.max(c.receipts.get(r.user) || 0, r.seq));
  renderList();
  if (state.open === c.view.id) renderThread({ bottom: before === undefined });
}

function openDirect(user) {
  const existing = [...state.convs.values()].find(
    (c) => c.view.kind === 'direct' && c.view.participants.includes(user) && c.view.participants.length === 2,
  );
  if (existing) {
    existing.hidden = false;
    return openConversation(existing.view.id);
  }
  state.open = { draft: user };
  renderList();
  renderThread({ focus: true });
}

function closeThread() {
  state.open = null;
  state.replyTo = null;
  renderList();
  renderThread();
}

function maybeRead(c) {
  if (!c || state.open !== c.view.id || !c.msgs || document.visibilityState !== 'visible') return;
  const target = sortedMessages(c)
    .reverse()
    .find((m) => m.sender !== state.me && m.state !== 'recalled');
  if (!target || target.seq <= Math.max(c.readSent, c.myRead)) {
    if (unreadOf(c)) clearUnread(c, Infinity);
    return;
  }
  c.readSent = target.seq;
  clearUnread(c, target.seq);
  state.client.read(c.view.id, target.id).then(
    () => { c.myRead = Math.max(c.myRead, target.seq); },
    (err) => {
      c.readSent = 0;
      if (!(err instanceof ParleyError && err.code === 'not_found')) fail(err);
    },
  );
}

function clearUnread(c, seq) {
  if (seq >= c.baseSeq) c.baseUnread = 0;
  for (const [id, s] of c.unreadLive) if (s <= seq) c.unreadLive.delete(id);
  for (const m of c.msgs?.values() || []) dropToastFor(m.id);
  renderList();
}

function dropToastFor(key) {
  const el = state.toasts.get(key);
  if (el) dropToast(el, key);
}

function recallOpen(c, m) {
  return (
    m.sender === state.me &&
    m.kind === 'message' &&
    m.state === 'visible' &&
    typeof m.recall_until === 'number' &&
    state.client.serverNow() < m.recall_until &&
    !state.recallClosed.has(m.id) &&
    readByOthersUpTo(c) < m.seq &&
    !recallAllowanceUsed(c) &&
    !recallThrottled()
  );
}

function inmailDeleteOpen(m) {
  return (
    m.sender === state.me &&
    m.kind === 'inmail' &&
    m.state === 'visible' &&
    typeof m.delete_until === 'number' &&
    state.client.serverNow() < m.delete_until
  );
}

/** The line quoting the message `m` replies to, if it is a reply. */
function replyText(c, m) {
  if (!m.reply_to) return null;
  const p = c.msgs?.get(m.reply_to);
  const text = !p ? 'an earlier message' : p.state === 'visible' ? p.body : p.state === 'recalled' ? 'a recalled message' : 'a deleted message';
  return `↪ ${p && p.state === 'visible' ? `${p.sender}: ` : ''}${text}`;
}

/** Recall with its countdown, and what a click does: the message becomes a marker. */
function recallButton(c, m) {
  const client = state.client;
  const cid = c.view.id;
  return h(
    'button',
    {
      type: 'button',
      class: 'small warn',
      testid: 'recall',
      title: 'Recall for everyone, while nobody has read it',
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await client.recall(cid, m.id);
          noteOwnRecall(c, m.id);
          m.state = 'recalled';
          delete m.body;
          afterChange(c);
          // The button is gone with the message's text: focus stays on the message.
          rendered.get(m.id)?.el.focus();
        } catch (err) {
          if (err instanceof ParleyError && ['already_read', 'recall_window_closed'].includes(err.code)) {
            state.recallClosed.add(m.id);
          }
          fail(err);
          renderThread();
        }
      },
    },
    'Recall ',
    h('span', { class: 'countdown', testid: 'recall-countdown', dataset: { until: m.recall_until, window: state.limits.recall_window_ms } }, countdown(timeLeft(m.recall_until, state.limits.recall_window_ms))),
  );
}

/** Delete for everyone, for an InMail of ours still in its window. */
function deleteInmailButton(c, m) {
  const client = state.client;
  const cid = c.view.id;
  return h(
    'button',
    {
      type: 'button',
      class: 'small warn',
      testid: 'delete-inmail',
      title: 'Delete this InMail for you and its recipient',
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await client.deleteInmail(cid, m.id);
          removeMessage(c, m.id);
          afterChange(c);
        } catch (err) {
          fail(err);
          renderThread();
        }
      },
    },
    'Delete for everyone ',
    h('span', { class: 'countdown', testid: 'delete-countdown', dataset: { until: m.delete_until, window: state.limits.inmail_delete_window_ms } }, countdown(timeLeft(m.delete_until, state.limits.inmail_delete_window_ms))),
  );
}

/** The buttons under a message: only those that can succeed right now. */
function messageActions(c, m) {
  const mine = m.sender === state.me;
  const client = state.client;
  const cid = c.view.id;
  const actions = [];
  if (recallOpen(c, m)) actions.push(recallButton(c, m));
  if (inmailDeleteOpen(m)) actions.push(deleteInmailButton(c, m));
  if (m.state === 'visible') {
    actions.push(
      act('Reply', 'reply', () => {
        state.replyTo = m;
        renderComposer();
        $('composer-input').focus();
      }, 'small quiet'),
      act('Delete for me', 'delete-for-me', async () => {
        await client.deleteForMe(cid, m.id);
        m.state = 'deleted';
        delete m.body;
        afterChange(c);
      }, 'small quiet'),
    );
    if (!mine) actions.push(act('Report', 'report-message', () => openReport({ kind: 'message', conversation: cid, message: m.id }, `Report this message from ${m.sender}`), 'small quiet'));
  }
  return actions;
}

function renderMessage(c, m, seenBy) {
  const mine = m.sender === state.me;
  const body =
    m.state === 'recalled'
      ? h('p', { class: 'marker', testid: 'recalled-marker' }, mine ? 'You recalled this message' : `${m.sender} recalled this message`)
      : m.state === 'deleted'
        ? h('p', { class: 'marker', testid: 'tombstone' }, 'This message has been deleted')
        : h('p', { class: 'body', testid: 'message-body', dir: 'auto' }, m.body || '');
  const parentText = replyText(c, m);
  const parent = parentText ? h('p', { class: 'reply-to', dir: 'auto' }, parentText) : null;
  const actions = messageActions(c, m);
  const li = h(
    'li',
    {
      class: `msg${mine ? ' mine' : ''} ${m.state}`,
      testid: 'message',
      tabindex: '-1',
      dataset: { messageId: m.id, state: m.state, sender: m.sender, seq: m.seq },
    },
    h(
      'div',
      { class: 'bubble' },
      h('p', { class: 'meta' },
        h('span', { class: 'sender' }, mine ? 'You' : m.sender),
        ' · ',
        h('time', { datetime: new Date(m.sent_at).toISOString(), title: new Date(m.sent_at).toLocaleString() }, stamp(m.sent_at)),
        m.kind === 'inmail' ? h('span', { class: 'badge' }, 'InMail') : null,
        m.kind === 'inmail' && m.cc?.length ? h('span', { class: 'hint' }, ` to ${m.to}, copy to ${m.cc.join(', ')}`) : null,
      ),
      parent,
      body,
    ),
    actions.length ? h('div', { class: 'msg-actions' }, ...actions) : null,
    seenBy ? h('p', { class: 'seen', testid: 'seen' }, seenBy) : null,
  );
  return li;
}

/** Whom to name under our newest message someone has read. */
function seenLabels(c, list) {
  const labels = new Map();
  const mineVisible = list.filter((m) => m.sender === state.me && m.state !== 'recalled');
  if (!mineVisible.length) return labels;
  const group = c.view.kind === 'group';
  const readers = new Map();
  for (const [user, seq] of c.receipts) {
    const m = [...mineVisible].reverse().find((x) => x.seq <= seq);
    if (!m) continue;
    if (!readers.has(m.id)) readers.set(m.id, []);
    readers.get(m.id).push(user);
  }
  // Only the newest read message of ours carries the label, as chat apps do.
  const newest = [...mineVisible].reverse().find((m) => readers.has(m.id));
  if (newest) labels.set(newest.id, group ? `Seen by ${readers.get(newest.id).sort().join(', ')}` : 'Seen');
  return labels;
}

function renderThread({ focus = false, bottom = false } = {}) {
  const draft = state.open && typeof state.open === 'object' ? state.open.draft : null;
  const c = openConv();
  const shown = Boolean(c || draft);
  $('thread-empty').hidden = shown;
  $('thread-body').hidden = !shown;
  document.body.classList.toggle('thread-open', shown);
  const other = c ? otherOne(c) : draft;
  if (shown) renderThreadHead(c, draft, other);
  renderMessages(c, other, { bottom });
  if (!shown) return;
  renderTyping();

  renderComposerGate(c, draft, other);
  renderComposer();
  if (focus) $('composer-input').focus();
}

/** Title and actions of the open thread; the buttons are rebuilt only when what they offer
 * changes, so a frame never takes focus from one of them. */
function renderThreadHead(c, draft, other) {
  if (c) {
    $('thread-title').textContent = convTitle(c);
    const sub = c.view.kind === 'inmail' ? 'InMail' : c.view.kind === 'group' ? `Group · ${c.view.participants.join(', ')}` : 'Direct message';
    $('thread-sub').textContent = c.muted ? `${sub} · muted` : sub;
  } else {
    $('thread-title').textContent = draft;
    $('thread-sub').textContent = 'New direct message';
  }
  const sig = JSON.stringify([c?.view.id, c?.muted, other, other && state.blocked.has(other)]);
  const box = $('thread-actions');
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  const actions = [];
  if (c) {
    actions.push(act(c.muted ? 'Unmute' : 'Mute', 'mute', async () => {
      await state.client.mute(c.view.id, !c.muted);
      c.muted = !c.muted;
      renderList();
      renderThread();
    }, 'small quiet'));
    actions.push(act('Hide', 'hide', async () => {
      await state.client.hide(c.view.id, true);
      c.hidden = true;
      toast('Conversation hidden. It comes back when a new message arrives.');
      closeThread();
    }, 'small quiet'));
  }
  if (other) {
    actions.push(state.blocked.has(other)
      ? act('Unblock', 'thread-unblock', () => unblock(other), 'small quiet')
      : act('Block', 'thread-block', () => block(other), 'small quiet danger-text'));
    actions.push(act('Report', 'thread-report', () => openReport({ kind: 'user', user: other }, `Report ${other}`), 'small quiet'));
  }
  actions.push(h('button', { type: 'button', class: 'small quiet', testid: 'close-thread', 'aria-label': 'Close conversation', onclick: closeThread }, 'Close'));
  box.replaceChildren(...actions);
}

/**
 * Offer the composer only when a send can succeed: not to someone we blocked, and in a
 * direct conversation not without a connection (a block ends it, an unblock does not bring
 * it back). Instead, say what to do; the note and any stale error go once it no longer holds.
 */
function renderComposerGate(c, draft, other) {
  const blocked = Boolean(other && c?.view.kind !== 'group' && state.blocked.has(other));
  const direct = Boolean(other && (draft || c?.view.kind === 'direct'));
  const unconnected = direct && !blocked && !state.connections.has(other);
  const gate = blocked ? 'blocked' : unconnected ? relationOf(other) : 'open';
  const note = $('blocked-note');
  $('composer').hidden = gate !== 'open';
  note.hidden = gate === 'open';
  const sig = `${gate}:${other}`;
  if (note.dataset.sig === sig) return;
  if (note.dataset.sig) $('composer-error').textContent = '';
  note.dataset.sig = sig;
  const inmail = act('Send an InMail', 'gate-inmail', () => openInmail(other), 'small quiet');
  const content = {
    open: [],
    blocked: [`You blocked ${other}. Unblock them to send messages again.`],
    none: [`You and ${other} are not connected, so direct messages can’t reach them. Connect again, or send an InMail. `,
      act('Connect', 'gate-connect', () => relation.connect(other), 'small primary'), ' ', inmail],
    requested: [`You asked to connect with ${other}. You can message them here once they accept; meanwhile, `, inmail],
    incoming: [`${other} asked to connect with you. Accept to message them here. `,
      act('Accept', 'gate-accept', () => relation.accept(other), 'small primary')],
  }[gate];
  note.replaceChildren(...content);
}

function relationOf(user) {
  if (state.outgoing.has(user)) return 'requested';
  if (state.incoming.has(user)) return 'incoming';
  return 'none';
}

function renderTyping() {
  const c = openConv();
  const now = Date.now();
  const typers = c ? [...c.typing].filter(([, until]) => until > now).map(([u]) => u) : [];
  const text = typers.length ? `${typers.join(', ')} ${typers.length === 1 ? 'is' : 'are'} typing…` : '';
  if ($('typing').textContent !== text) $('typing').textContent = text;
}

// ---------------------------------------------------------------------------------------
// The message list: a window of at most WINDOW_MAX rendered messages, rendered by key
// ---------------------------------------------------------------------------------------

/** Rendered messages of the open thread: key → element and the signature it was built from. */
const rendered = new Map();

function scrollerAtBottom() {
  const s = $('messages-scroll');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
}

/** The window onto `c`'s loaded messages: from seq `from`, up to seq `to` or, when `tail`,
 * up to the newest (new messages join it). A new thread starts at its newest messages. */
function windowOf(c) {
  if (state.win?.conv !== c.view.id) {
    state.win = { conv: c.view.id, from: -Infinity, to: Infinity, tail: true };
    state.unseenBelow = false;
    rendered.clear();
    $('messages').replaceChildren();
  }
  return state.win;
}

/** The messages of `list` inside the window, at most WINDOW_MAX (the oldest dropped while
 * following the tail, else the newest); the window's bounds follow what is kept. */
function windowSlice(w, list) {
  let slice = list.filter((m) => m.seq >= w.from && (w.tail || m.seq <= w.to));
  if (slice.length > WINDOW_MAX) slice = w.tail ? slice.slice(-WINDOW_MAX) : slice.slice(0, WINDOW_MAX);
  if (slice.length) {
    w.from = slice[0].seq;
    if (!w.tail) w.to = slice[slice.length - 1].seq;
  }
  return slice;
}

function messageItems(c, other) {
  if (!c) return [{ key: 'hint', sig: `draft:${other}`, build: () => hintItem(`Say hello to ${other}.`) }];
  const list = sortedMessages(c);
  const slice = windowSlice(windowOf(c), list);
  const seen = seenLabels(c, list);
  const items = slice.map((m) => {
    const seenBy = seen.get(m.id);
    const sig = JSON.stringify([m.state, m.body, seenBy, recallOpen(c, m), inmailDeleteOpen(m), replyText(c, m)]);
    return { key: m.id, sig, build: () => renderMessage(c, m, seenBy) };
  });
  if (state.win.tail) {
    for (const p of c.pending) items.push({ key: `pending:${p.key}`, sig: '', build: () => pendingItem(p) });
  }
  if (!items.length) {
    const text = c.msgs ? `Say hello to ${other || 'everyone'}.` : 'Loading…';
    items.push({ key: 'hint', sig: text, build: () => hintItem(text) });
  }
  return items;
}

function hintItem(text) {
  return h('li', { class: 'thread-hint hint' }, text);
}

function pendingItem(p) {
  return h('li', { class: 'msg mine pending', testid: 'message', dataset: { state: 'pending' } },
    h('div', { class: 'bubble' }, h('p', { class: 'meta' }, 'You · sending…'), h('p', { class: 'body', dir: 'auto' }, p.body)));
}

/**
 * Bring the list in line with the state, touching only messages that changed. Whoever was
 * at the bottom stays there; anyone else keeps the message they were looking at in place.
 */
function renderMessages(c, other, { bottom = false } = {}) {
  const scroller = $('messages-scroll');
  if (!c && !other) {
    state.win = null;
    rendered.clear();
    $('messages').replaceChildren();
    return;
  }
  if (!c) state.win = null;
  const stick = bottom || ((!state.win || state.win.tail) && scrollerAtBottom());
  const anchor = stick ? null : captureAnchor(scroller);
  reconcile($('messages'), messageItems(c, other), rendered, scroller);
  if (stick) {
    scroller.scrollTop = scroller.scrollHeight;
    state.unseenBelow = false;
  } else {
    restoreAnchor(scroller, anchor);
  }
  renderHistoryEdges(c);
}

/** The first rendered element still in view, and where it is, to put it back after a change. */
function captureAnchor(scroller) {
  const top = scroller.getBoundingClientRect().top;
  for (const el of $('messages').children) {
    const r = el.getBoundingClientRect();
    if (r.bottom > top) return { el, offset: r.top - top };
  }
  return null;
}

function restoreAnchor(scroller, anchor) {
  if (!anchor?.el.isConnected) return;
  const moved = anchor.el.getBoundingClientRect().top - scroller.getBoundingClientRect().top - anchor.offset;
  if (moved) scroller.scrollTop += moved;
}

/** What lies beyond the rendered window: older history being fetched, or newer messages. */
function renderHistoryEdges(c) {
  const status = $('history-status');
  const loading = Boolean(c?.loadingEarlier);
  status.hidden = !loading;
  status.textContent = loading ? 'Loading earlier messages…' : '';
  const jump = $('jump-newest');
  const below = Boolean(c && state.win && (!state.win.tail || state.unseenBelow));
  jump.hidden = !below;
  jump.textContent = state.unseenBelow ? 'New messages ↓' : 'Newest messages ↓';
}

/** Scrolling near an end of the window widens it that way, fetching older pages as needed. */
function onMessagesScroll() {
  const c = openConv();
  if (!c || !state.win) return;
  const s = $('messages-scroll');
  if (s.scrollTop < EDGE_PX) showEarlier(c);
  else if (s.scrollHeight - s.scrollTop - s.clientHeight < EDGE_PX) showLater(c);
  if (state.unseenBelow && state.win.tail && scrollerAtBottom()) {
    state.unseenBelow = false;
    renderHistoryEdges(c);
  }
}

function showEarlier(c) {
  const w = state.win;
  const list = sortedMessages(c);
  const start = list.findIndex((m) => m.seq >= w.from);
  if (start > 0) {
    const newStart = Math.max(0, start - WINDOW_STEP);
    w.from = list[newStart].seq;
    // Widening past the cap lets go of the newest end; windowSlice trims it.
    if (list.length - newStart > WINDOW_MAX) w.tail = false;
    renderMessages(c, otherOne(c));
  } else if (c.more && !c.loadingEarlier && list.length) {
    loadEarlier(c, list[0].seq);
  }
}

function showLater(c) {
  const w = state.win;
  if (w.tail) return;
  const list = sortedMessages(c);
  const end = list.findIndex((m) => m.seq > w.to);
  if (end === -1 || end + WINDOW_STEP >= list.length) {
    w.tail = true;
  } else {
    w.to = list[end + WINDOW_STEP - 1].seq;
  }
  const last = w.tail ? list.length : end + WINDOW_STEP;
  w.from = list[Math.max(0, last - WINDOW_MAX)].seq;
  renderMessages(c, otherOne(c));
}

async function loadEarlier(c, beforeSeq) {
  c.loadingEarlier = true;
  renderHistoryEdges(c);
  try {
    await loadHistory(c, beforeSeq);
  } finally {
    c.loadingEarlier = false;
    if (state.open === c.view.id) {
      renderHistoryEdges(c);
      // Still at the top (a short page): keep going without waiting for another scroll.
      if ($('messages-scroll').scrollTop < EDGE_PX) showEarlier(c);
    }
  }
}

/** Whoever reads the newest messages keeps reading them when the list's box changes size
 * (a toast appearing above it, a phone's keyboard). */
function keepBottomOnResize(scroller) {
  let wasAtBottom = true;
  scroller.addEventListener('scroll', () => { wasAtBottom = scrollerAtBottom(); }, { passive: true });
  new ResizeObserver(() => {
    if (wasAtBottom && state.win?.tail) scroller.scrollTop = scroller.scrollHeight;
  }).observe(scroller);
}

function jumpToNewest() {
  const c = openConv();
  if (!c) return;
  state.win = { conv: c.view.id, from: -Infinity, to: Infinity, tail: true };
  renderMessages(c, otherOne(c), { bottom: true });
}

/**
 * Make `parent`'s children the elements of `items`, in order, reusing each key's element
 * while its signature is unchanged. Untouched elements are never moved or rebuilt, so a
 * selection in them survives; focus inside a rebuilt one moves to its successor.
 * @param {Array<{key: string, sig: string, build: () => Element}>} items
 * @param {Map<string, {el: Element, sig: string}>} cache the elements of the last call
 */
function reconcile(parent, items, cache, fallbackFocus) {
  const active = document.activeElement;
  let focusKey = null;
  for (const [key, { el }] of cache) if (el.contains(active)) focusKey = key;
  const wanted = new Map();
  for (const { key, sig, build } of items) {
    const had = cache.get(key);
    wanted.set(key, had && had.sig === sig ? had : { el: build(), sig });
  }
  for (const [key, { el }] of cache) if (wanted.get(key)?.el !== el) el.remove();
  let cursor = parent.firstElementChild;
  for (const { el } of wanted.values()) {
    if (el === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(el, cursor);
  }
  cache.clear();
  for (const [key, entry] of wanted) cache.set(key, entry);
  if (focusKey !== null && !active.isConnected) {
    const el = cache.get(focusKey)?.el;
    const testid = active.dataset?.testid;
    const same = el && testid ? el.querySelector(`[data-testid="${testid}"]`) : null;
    (same || el || fallbackFocus)?.focus();
  }
}

function renderComposer() {
  const input = $('composer-input');
  const max = state.limits?.max_body_chars ?? 0;
  const n = bodyLength(input.value);
  const count = $('composer-count');
  count.textContent = n > max * 0.8 ? `${n} / ${max}` : '';
  count.classList.toggle('over', n > max);
  const bar = $('reply-bar');
  bar.hidden = !state.replyTo;
  if (state.replyTo) $('reply-text').textContent = `Replying to ${state.replyTo.sender === state.me ? 'yourself' : state.replyTo.sender}: ${state.replyTo.body || ''}`;
}

/** Re-render what a change in `c` touches. */
function afterChange(c) {
  renderList();
  if (state.open === c.view.id) renderThread();
}

/** Take a message out without a trace (an InMail deleted for everyone). */
function removeMessage(c, id) {
  c.msgs?.delete(id);
  c.unreadLive.delete(id);
  if (c.last?.id === id) {
    const rest = sortedMessages(c);
    c.last = rest.length ? rest[rest.length - 1] : null;
  }
  // An InMail conversation with nothing left in it leaves the inbox, as the server's does.
  const empty = c.msgs ? c.msgs.size === 0 : c.last === null;
  if (c.view.kind === 'inmail' && empty) {
    state.convs.delete(c.view.id);
    if (state.open === c.view.id) closeThread();
    else renderList();
  }
}

/** Countdowns tick each second; a button whose window closed disappears. */
function tick() {
  if (!state.client) return;
  const now = state.client.serverNow();
  let expired = false;
  for (const el of document.querySelectorAll('.countdown[data-until]')) {
    const left = Math.min(Number(el.dataset.until) - now, Number(el.dataset.window));
    if (left <= 0) expired = true;
    else el.textContent = countdown(left);
  }
  const c = openConv();
  const typingShown = $('typing').textContent !== '';
  const typingNow = c && [...c.typing.values()].some((until) => until > Date.now());
  // Recall returns to messages still in their window once the throttle lifts.
  const throttled = recallThrottled();
  if (throttled !== state.throttled) {
    state.throttled = throttled;
    expired = true;
  }
  if (expired) renderThread();
  else if (typingShown && !typingNow) renderTyping();
}

// ---------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------

async function submitComposer(e) {
  e.preventDefault();
  const input = $('composer-input');
  const body = input.value.trim();
  $('composer-error').textContent = '';
  if (!body) return;
  const c = openConv();
  const draft = state.open && typeof state.open === 'object' ? state.open.draft : null;
  if (!c && !draft) return;
  const replyTo = state.replyTo?.id;
  input.value = '';
  state.replyTo = null;
  const key = ++state.sendingSeq;
  if (c) {
    c.pending.push({ key, body });
    jumpToNewest();
  }
  try {
    const fields = c ? { conversation: c.view.id, body } : { to: draft, body };
    if (replyTo) fields.reply_to = replyTo;
    const { message } = await state.client.send(fields);
    const target = c || ensureConv({ id: message.conversation, kind: 'direct', participants: [state.me, draft] });
    if (!target.msgs) target.msgs = new Map();
    target.pending = target.pending.filter((p) => p.key !== key);
    target.hidden = false;
    upsertMessage(target, message);
    if (!c) {
      state.open = target.view.id;
      renderList();
      renderThread({ bottom: true });
    } else {
      afterChange(target);
      jumpToNewest();
    }
  } catch (err) {
    if (c) c.pending = c.pending.filter((p) => p.key !== key);
    if (!input.value) input.value = body;
    $('composer-error').textContent = explain(err);
    // The server knows better: the connection is gone (ended by a block, say).
    const other = c ? otherOne(c) : draft;
    if (err instanceof ParleyError && err.code === 'not_connected' && other) state.connections.delete(other);
    renderThread();
  }
}

function onComposerInput() {
  renderComposer();
  const c = openConv();
  const now = Date.now();
  if (c && $('composer-input').value && now - state.lastTypingSent > TYPING_EVERY_MS) {
    state.lastTypingSent = now;
    state.client.typing(c.view.id).catch(() => {});
  }
}

function openInmail(to = '') {
  $('inmail-to').value = to;
  $('inmail-cc').value = '';
  $('inmail-body').value = '';
  $('inmail-body').maxLength = state.limits?.max_body_chars ?? 8000;
  $('inmail-error').textContent = '';
  $('inmail-dialog').showModal();
  (to ? $('inmail-body') : $('inmail-to')).focus();
}

async function submitInmail(e) {
  e.preventDefault();
  const to = $('inmail-to').value.trim();
  const cc = $('inmail-cc').value.split(',').map((s) => s.trim()).filter(Boolean);
  const body = $('inmail-body').value.trim();
  if (!to || !body) return;
  try {
    const { message } = await state.client.inmail({ to, cc, body });
    const c = ensureConv({ id: message.conversation, kind: 'inmail', participants: [state.me, to, ...cc.filter((u) => u !== to)] });
    if (!c.msgs) c.msgs = new Map();
    upsertMessage(c, message);
    $('inmail-dialog').close();
    openConversation(c.view.id);
  } catch (err) {
    $('inmail-error').textContent = explain(err);
  }
}

function openGroupDialog() {
  $('group-name').value = '';
  $('group-error').textContent = '';
  const people = [...state.connections].sort();
  $('group-members').replaceChildren(...people.map((u) =>
    h('li', {}, h('label', {}, h('input', { type: 'checkbox', value: u, testid: 'group-member', dataset: { user: u } }), u))));
  $('group-none').hidden = people.length >= 2;
  $('group-dialog').showModal();
  $('group-name').focus();
}

async function submitGroup(e) {
  e.preventDefault();
  const members = [...$('group-members').querySelectorAll('input:checked')].map((i) => i.value);
  if (members.length < 2) {
    $('group-error').textContent = 'Pick at least two people: a group is three or more.';
    return;
  }
  const title = $('group-name').value.trim();
  try {
    const { conversation } = await state.client.createGroup(title ? { members, title } : { members });
    const c = ensureConv(conversation);
    if (!c.msgs) c.msgs = new Map();
    c.activity = Math.max(c.activity, state.client.serverNow());
    $('group-dialog').close();
    openConversation(c.view.id);
  } catch (err) {
    $('group-error').textContent = explain(err);
  }
}

let reportTarget = null;
function openReport(target, what) {
  reportTarget = target;
  $('report-what').textContent = what;
  $('report-reason').value = '';
  $('report-error').textContent = '';
  $('report-dialog').showModal();
  $('report-reason').focus();
}

async function submitReport(e) {
  e.preventDefault();
  const reason = $('report-reason').value.trim();
  if (!reason || !reportTarget) return;
  try {
    await state.client.report(reportTarget, reason);
    $('report-dialog').close();
    toast('Thank you. Your report was sent to the moderators.');
  } catch (err) {
    $('report-error').textContent = explain(err);
  }
}

function openSettings() {
  const s = state.settings;
  $('set-who').value = s.who_can_message;
  $('set-receipts').value = s.read_receipts;
  $('set-preview').value = s.notification_preview;
  $('settings-error').textContent = '';
  $('settings-dialog').showModal();
}

async function submitSettings(e) {
  e.preventDefault();
  try {
    const { settings } = await state.client.updateSettings({
      who_can_message: $('set-who').value,
      read_receipts: $('set-receipts').value,
      notification_preview: $('set-preview').value,
    });
    state.settings = settings;
    $('settings-dialog').close();
    toast('Settings saved.');
  } catch (err) {
    $('settings-error').textContent = explain(err);
  }
}

// ---------------------------------------------------------------------------------------
// Frames from the server
// ---------------------------------------------------------------------------------------

function onSync(sync) {
  const inInbox = new Set();
  for (const row of sync.inbox) {
    const c = ensureConv(row.conversation);
    inInbox.add(c.view.id);
    c.hidden = false;
    c.muted = row.muted;
    c.baseUnread = row.unread;
    c.baseSeq = row.last_message?.seq ?? 0;
    c.unreadLive.clear();
    if (row.last_message) {
      c.last = row.last_message;
      c.activity = row.last_message.sent_at;
    }
  }
  for (const [id, c] of state.convs) if (!inInbox.has(id)) c.hidden = true;
  state.connections = new Set(sync.connections);
  state.incoming = new Set(sync.incoming_requests);
  state.outgoing = new Set(sync.outgoing_requests);
  state.blocked = new Set(sync.blocked);
  state.settings = sync.settings;
  for (const n of sync.notifications) onNotification({ notification: n });
  renderList();
  renderPeople();
  renderThread();
}

function convFor(id) {
  const c = state.convs.get(id);
  if (c) return c;
  // A conversation we had not heard of (hidden, then revived by a new message): its
  // history answer carries its shape.
  const placeholder = ensureConv({ id, kind: 'direct', participants: [state.me] });
  placeholder.msgs = null;
  loadHistory(placeholder);
  return placeholder;
}

const handlers = {
  conversation(f) {
    ensureConv(f.conversation);
    renderList();
  },
  message(f, { replayed }) {
    const m = f.message;
    const c = convFor(m.conversation);
    c.hidden = false;
    upsertMessage(c, m);
    if (!replayed && m.sender !== state.me && m.state === 'visible' && m.seq > c.myRead) c.unreadLive.set(m.id, m.seq);
    if (m.sender !== state.me) c.typing.delete(m.sender);
    if (!replayed && state.open === c.view.id && m.state === 'visible') {
      announce(`${m.sender === state.me ? 'You' : m.sender}: ${m.body}`);
      if (!(state.win?.tail && scrollerAtBottom())) state.unseenBelow = true;
    }
    afterChange(c);
    maybeRead(c);
  },
  read(f) {
    const c = state.convs.get(f.conversation);
    if (!c) return;
    if (f.user === state.me) {
      c.myRead = Math.max(c.myRead, f.seq);
      clearUnread(c, f.seq);
    } else {
      c.receipts.set(f.user, Math.max(c.receipts.get(f.user) || 0, f.seq));
    }
    afterChange(c);
  },
  recalled(f, { replayed } = {}) {
    const c = state.convs.get(f.conversation);
    dropToastFor(f.message);
    if (!c) return;
    if (f.mode === 'silent') {
      removeMessage(c, f.message);
    } else {
      const m = c.msgs?.get(f.message) || (c.last?.id === f.message ? c.last : null);
      if (m) {
        m.state = 'recalled';
        delete m.body;
        if (m.sender === state.me) noteOwnRecall(c, m.id);
        if (!replayed && state.open === c.view.id) announce(`${m.sender} recalled a message`);
      }
      c.unreadLive.delete(f.message);
    }
    if (c.last?.id === f.message && f.mode === 'marker') {
      c.last = { ...c.last, state: 'recalled', body: undefined };
    }
    if (state.replyTo?.id === f.message) state.replyTo = null;
    afterChange(c);
  },
  'deleted-view'(f) {
    const c = state.convs.get(f.conversation);
    if (!c) return;
    for (const m of [c.msgs?.get(f.message), c.last?.id === f.message ? c.last : null]) {
      if (m) {
        m.state = 'deleted';
        delete m.body;
      }
    }
    c.unreadLive.delete(f.message);
    afterChange(c);
  },
  recall_closed(f) {
    state.recallClosed.add(f.message);
    const c = state.convs.get(f.conversation);
    if (c) afterChange(c);
  },
  blocked(f) {
    state.blocked.add(f.user);
    state.connections.delete(f.user);
    renderPeople();
    renderThread();
  },
  unblocked(f) {
    state.blocked.delete(f.user);
    renderPeople();
    renderThread();
  },
  connection_request(f) {
    state.incoming.add(f.from);
    renderPeople();
    renderThread();
    toast(`${f.from} wants to connect with you.`, { key: `request:${f.from}`, ttl: 8000 });
  },
  connected(f) {
    dropToastFor(`request:${f.user}`);
    state.connections.add(f.user);
    state.incoming.delete(f.user);
    state.outgoing.delete(f.user);
    renderPeople();
    renderThread();
    if (state.profile?.user === f.user) lookup(f.user);
  },
  disconnected(f) {
    state.connections.delete(f.user);
    state.incoming.delete(f.user);
    state.outgoing.delete(f.user);
    renderPeople();
    renderThread();
    if (state.profile?.user === f.user) lookup(f.user);
  },
  conversation_state(f) {
    const c = state.convs.get(f.conversation);
    if (!c) return;
    c.muted = f.muted;
    c.hidden = f.hidden;
    if (f.hidden && state.open === c.view.id) closeThread();
    else afterChange(c);
  },
  settings(f) {
    state.settings = f.settings;
  },
  notification: onNotification,
  notification_retracted(f) {
    for (const id of f.messages) dropToastFor(id);
  },
  typing(f) {
    const c = state.convs.get(f.conversation);
    // Someone we blocked stays silent here, typing included.
    if (!c || f.user === state.me || state.blocked.has(f.user)) return;
    c.typing.set(f.user, Date.now() + TYPING_SHOWN_MS);
    if (state.open === c.view.id) renderTyping();
  },
};

function onNotification({ notification: n }) {
  const c = state.convs.get(n.conversation);
  if (state.open === n.conversation && document.visibilityState === 'visible') return;
  if (c?.muted || state.toasts.has(n.message)) return;
  const text = n.sender ? (n.preview ? `${n.sender}: ${n.preview}` : `New message from ${n.sender}`) : 'New message';
  toast(text, { key: n.message, ttl: 6000, onclick: () => openConversation(n.conversation) });
}

// ---------------------------------------------------------------------------------------
// Sign-in and start
// ---------------------------------------------------------------------------------------

function showSignin(message = '') {
  $('signin').hidden = false;
  $('app').hidden = true;
  $('signin-error').textContent = message;
  for (const id of ['whoami', 'open-settings', 'sign-out']) $(id).hidden = true;
  renderStatus('idle');
  fetch('/demo/mode', { cache: 'no-store' }).then((r) => (r.ok ? r.text() : 'off')).then((mode) => {
    const demo = mode.trim() === 'on';
    $('demo-form').hidden = !demo;
    if (demo) $('handle').focus();
    else $('token').focus();
  }, () => {});
}

// ---------------------------------------------------------------------------------------
// One sign-in for all of the page's tabs. The token stays in each tab's sessionStorage
// (gone with the tab), never in long-lived storage: a new tab asks the open ones for it
// over a BroadcastChannel, which only pages of this origin can hear.
// ---------------------------------------------------------------------------------------

/** How long a new tab waits for another tab to answer before showing the sign-in form. */
const ASK_TABS_MS = 400;

const tabs = typeof BroadcastChannel === 'function' ? new BroadcastChannel('parley.session') : null;

tabs?.addEventListener('message', (e) => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (e.data?.type === 'ask' && token) tabs.postMessage({ type: 'token', token });
  if (e.data?.type === 'sign-out' && token) signOut('', { tellTabs: false });
});

/** The token of another open tab of this page, or null when none answers in time. */
function askOtherTabs() {
  if (!tabs) return Promise.resolve(null);
  return new Promise((resolve) => {
    const done = (token) => {
      clearTimeout(timer);
      tabs.removeEventListener('message', onAnswer);
      resolve(token);
    };
    const onAnswer = (e) => {
      if (e.data?.type === 'token' && typeof e.data.token === 'string') done(e.data.token);
    };
    const timer = setTimeout(() => done(null), ASK_TABS_MS);
    tabs.addEventListener('message', onAnswer);
    tabs.postMessage({ type: 'ask' });
  });
}

/** Signing out of one tab signs out of all: otherwise a new tab would be handed the token back. */
function signOut(message, { tellTabs = true } = {}) {
  if (tellTabs) tabs?.postMessage({ type: 'sign-out' });
  state.client?.close();
  sessionStorage.removeItem(TOKEN_KEY);
  if (message) sessionStorage.setItem('parley.notice', message);
  location.replace(location.pathname);
}

/**
 * The socket URL with a one-time ticket, so the token never appears in a URL (where proxy
 * and access logs would keep it). Falls back to the token itself only when no ticket can
 * be had (a server without `/ws-ticket`, or one that refuses the token: its answer on the
 * socket then says why).
 */
async function socketUrl(token) {
  const base = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  try {
    const r = await fetch('/ws-ticket', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      cache: 'no-store',
    });
    if (r.ok) {
      const { ticket } = await r.json();
      return `${base}?ticket=${encodeURIComponent(ticket)}`;
    }
  } catch (e) {
    console.warn('parley: no ticket, connecting with the token', e);
  }
  return `${base}?token=${encodeURIComponent(token)}`;
}

function start(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  $('signin').hidden = true;
  $('app').hidden = false;
  for (const id of ['open-settings', 'sign-out']) $(id).hidden = false;
  const client = new ParleyClient(() => socketUrl(token));
  state.client = client;
  client.on('status', renderStatus);
  client.on('hello', (hello) => {
    state.me = hello.user;
    state.limits = hello.limits;
    state.settings = hello.settings;
    const who = $('whoami');
    who.hidden = false;
    who.textContent = hello.user;
    $('composer-input').maxLength = hello.limits.max_body_chars;
  });
  client.on('sync', onSync);
  client.on('fatal', (f) => signOut(`Signed out: ${f.message || f.code}.`));
  for (const [type, fn] of Object.entries(handlers)) client.on(type, fn);
  client.on('error', (f) => {
    if (!f.id) toast(f.message, { kind: 'error' });
  });
  client.on('ready', ({ reconnected }) => {
    document.body.dataset.ready = 'true';
    if (reconnected) {
      // Receipts may have moved while away; the open thread asks again.
      const c = openConv();
      if (c) loadHistory(c);
    }
  });
  client.connect();
}

function main() {
  $('demo-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const handle = $('handle').value.trim();
    $('signin-error').textContent = '';
    try {
      const r = await fetch(`/demo/token?user=${encodeURIComponent(handle)}`, { cache: 'no-store' });
      const text = await r.text();
      if (!r.ok) throw new Error(text.trim());
      start(text.trim());
    } catch (err) {
      $('signin-error').textContent = err.message;
    }
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (token) start(token);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('open-settings').addEventListener('click', openSettings);
  $('settings-form').addEventListener('submit', submitSettings);
  $('settings-cancel').addEventListener('click', () => $('settings-dialog').close());
  $('new-inmail').addEventListener('click', () => openInmail());
  $('inmail-form').addEventListener('submit', submitInmail);
  $('new-group').addEventListener('click', openGroupDialog);
  $('group-form').addEventListener('submit', submitGroup);
  $('group-cancel').addEventListener('click', () => $('group-dialog').close());
  $('inmail-cancel').addEventListener('click', () => $('inmail-dialog').close());
  $('report-form').addEventListener('submit', submitReport);
  $('report-cancel').addEventListener('click', () => $('report-dialog').close());
  $('lookup-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const u = $('lookup').value.trim();
    if (u) lookup(u);
  });
  $('composer').addEventListener('submit', submitComposer);
  $('composer-input').addEventListener('input', onComposerInput);
  $('composer-input').addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter breaks the line, as in most chat apps.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('reply-cancel').addEventListener('click', () => {
    state.replyTo = null;
    renderComposer();
  });
  $('messages-scroll').addEventListener('scroll', onMessagesScroll, { passive: true });
  keepBottomOnResize($('messages-scroll'));
  $('jump-newest').addEventListener('click', jumpToNewest);
  document.addEventListener('visibilitychange', () => maybeRead(openConv()));
  window.addEventListener('online', () => state.client?.reconnect());
  setInterval(tick, 1000);

  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('token');
  if (fromUrl) {
    // Keep the token out of the address bar, history and bookmarks.
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : ''));
  }
  const notice = sessionStorage.getItem('parley.notice');
  sessionStorage.removeItem('parley.notice');
  const token = fromUrl || sessionStorage.getItem(TOKEN_KEY);
  if (token) start(token);
  else if (notice) showSignin(notice);
  else askOtherTabs().then((shared) => (shared ? start(shared) : showSignin()));
}

main();
