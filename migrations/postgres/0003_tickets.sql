-- One-time WebSocket tickets redeemed by any node: a ticket opens one session in the
-- whole cluster, not one per node. Rows are swept once the ticket has long expired.
CREATE TABLE IF NOT EXISTS redeemed_tickets (
    jti     TEXT PRIMARY KEY,
    expires TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS redeemed_tickets_expires ON redeemed_tickets (expires);

INSERT INTO schema_version (version)
  SELECT 3 WHERE NOT EXISTS (SELECT 1 FROM schema_version WHERE version >= 3);
