-- The server's own stored form: state in tables, queried by key, instead of a log of
-- wire-shaped JSON. Small integers stand for enumerations (see src/store/stored_form.rs);
-- message ids of the server's own form ("m-" and 32 hex digits) are kept as their 16
-- bytes. The change log of 0001 is carried over by parley itself (every change written
-- through the same code as a live commit), then dropped.

-- who_can_message: 0 everyone, 1 connections; read_receipts: 0 on, 1 off;
-- notification_preview: 0 full, 1 sender_only, 2 off.
CREATE TABLE users (
    handle               TEXT PRIMARY KEY,
    who_can_message      INTEGER NOT NULL DEFAULT 0,
    read_receipts        INTEGER NOT NULL DEFAULT 0,
    notification_preview INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- state 1: `a` asked `b`; state 2: connected (kept in both directions).
CREATE TABLE relations (
    a     TEXT NOT NULL,
    b     TEXT NOT NULL,
    state INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX relations_by_b ON relations (b, a);

CREATE TABLE blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked)
) WITHOUT ROWID;

-- kind: 0 direct, 1 group, 2 InMail. `pos` is the last position (messages and state
-- changes share it); `name` is the id on the wire.
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          INTEGER NOT NULL,
    title         TEXT,
    created_at    INTEGER NOT NULL,
    pos           INTEGER NOT NULL DEFAULT 0,
    last_activity INTEGER NOT NULL
);

-- `ord` keeps the participants' order: creator first, an InMail's primary recipient second.
CREATE TABLE members (
    conversation INTEGER NOT NULL,
    user         TEXT NOT NULL,
    ord          INTEGER NOT NULL,
    read_seq     INTEGER NOT NULL DEFAULT 0,
    muted        INTEGER NOT NULL DEFAULT 0,
    hidden       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation, user)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user, conversation);

-- kind: 0 message, 1 InMail; state: 0 visible, 1 recalled, 2 InMail deleted. A purge sets
-- `body` to NULL (secure_delete overwrites the old bytes). `cc` is the InMail's copied
-- recipients, one per line.
CREATE TABLE messages (
    conversation INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    id           BLOB NOT NULL,
    sender       TEXT NOT NULL,
    sent_at      INTEGER NOT NULL,
    kind         INTEGER NOT NULL,
    state        INTEGER NOT NULL DEFAULT 0,
    body         TEXT,
    reply_to     BLOB,
    cc           TEXT,
    PRIMARY KEY (conversation, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX messages_by_id ON messages (id);

-- State changes with a position of their own, for catching a client up: kind 1 read (by
-- `user` up to `seq`), 2 recall, 3 InMail delete, 4 delete-for-me (by `user`), and 5
-- mute/hide flags (`flags`: 1 muted, 2 hidden; at the position current then). `at` is when.
CREATE TABLE events (
    conversation INTEGER NOT NULL,
    pos          INTEGER NOT NULL,
    kind         INTEGER NOT NULL,
    user         TEXT,
    seq          INTEGER,
    at           INTEGER,
    flags        INTEGER
);
CREATE INDEX events_by_position ON events (conversation, pos);

-- Messages a participant deleted from their own view.
CREATE TABLE tombstones (
    conversation INTEGER NOT NULL,
    user         TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (conversation, user, seq)
) WITHOUT ROWID;

-- Client request ids of stored messages, so a retried send finds its message; kept for
-- a day (`at`, Unix milliseconds), then forgotten.
CREATE TABLE requests (
    sender       TEXT NOT NULL,
    request      TEXT NOT NULL,
    conversation INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (sender, request)
) WITHOUT ROWID;
CREATE INDEX requests_by_time ON requests (at);

-- Reports and the snapshot of a reported message (evidence: never purged).
-- target_kind: 0 message, 1 user.
CREATE TABLE reports (
    id           TEXT PRIMARY KEY,
    reporter     TEXT NOT NULL,
    target_kind  INTEGER NOT NULL,
    target       TEXT NOT NULL,
    target_message TEXT,
    reason       TEXT NOT NULL,
    at           INTEGER NOT NULL,
    snap_id      TEXT,
    snap_seq     INTEGER,
    snap_sender  TEXT,
    snap_sent_at INTEGER,
    snap_kind    INTEGER,
    snap_body    TEXT,
    snap_reply_to TEXT,
    snap_to      TEXT,
    snap_cc      TEXT
) WITHOUT ROWID;
