-- The change log: every committed change, in commit order. Replaying it rebuilds the
-- whole state, so rows are only ever appended, except that a purge rewrites the stored
-- message row without its body. `message` is set on rows about one message so a purge
-- finds the row without scanning the log.
CREATE TABLE changes (
    pos          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    conversation TEXT,
    message      TEXT,
    data         TEXT NOT NULL
);
CREATE INDEX changes_by_message ON changes (message) WHERE message IS NOT NULL;

-- Bodies of recalled or deleted messages, kept for moderation when the operator sets a
-- retention period, until `purge_after` (Unix milliseconds).
CREATE TABLE retained (
    message     TEXT PRIMARY KEY,
    body        TEXT,
    purge_after INTEGER NOT NULL
);
CREATE INDEX retained_by_deadline ON retained (purge_after);

-- Small facts about the store itself; written at every open, which also proves the
-- database can be written to before the server accepts anything.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
