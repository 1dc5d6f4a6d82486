-- Shared state of a parley cluster. Each decision is one row of `entries`, numbered per
-- scope (a conversation, or the directory) by `scopes.seq` under that scope's row lock.
CREATE TABLE IF NOT EXISTS scopes (
    id      TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL DEFAULT 0,
    touched TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scopes_by_touched ON scopes (touched);

-- `changes` and `emits` are JSON. A purge rewrites a stored message's row without its
-- body, in its changes and in its frames; `message`, `sender` and `at` are set on rows
-- that store a message, for the purge and for the recall throttle's count.
CREATE TABLE IF NOT EXISTS entries (
    scope   TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    changes TEXT NOT NULL,
    emits   TEXT,
    message TEXT,
    sender  TEXT,
    at      BIGINT,
    PRIMARY KEY (scope, seq)
);
CREATE INDEX IF NOT EXISTS entries_by_message ON entries (message) WHERE message IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_by_sender ON entries (sender, at) WHERE sender IS NOT NULL;
