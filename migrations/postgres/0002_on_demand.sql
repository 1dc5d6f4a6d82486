-- Nodes read conversations on demand instead of replaying every entry at start.
-- `entries.id` numbers rows in insertion order across scopes: a node starting marks the
-- next one, and an entry of a scope it meets later is delivered only if numbered since.
-- `reports` flags the rows that file a report, which every node holds from the start;
-- `members` lists each conversation's participants, for a user's inbox and sync.
CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL);

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM schema_version WHERE version >= 2) THEN
    ALTER TABLE entries ADD COLUMN id BIGSERIAL;
    ALTER TABLE entries ADD COLUMN reports BOOLEAN NOT NULL DEFAULT false;
    UPDATE entries SET reports = true WHERE changes LIKE '%"kind":"reported"%';
    CREATE INDEX entries_with_reports ON entries (scope, seq) WHERE reports;
    CREATE TABLE members (
        user_id TEXT NOT NULL,
        scope   TEXT NOT NULL,
        PRIMARY KEY (user_id, scope)
    );
    -- A conversation's first entry creates it.
    INSERT INTO members (user_id, scope)
      SELECT DISTINCT p, e.scope
      FROM entries e,
           jsonb_array_elements(e.changes::jsonb) c,
           jsonb_array_elements_text(c -> 'conversation' -> 'participants') p
      WHERE e.seq = 1 AND e.scope <> 'directory' AND c ->> 'kind' = 'conversation_created'
      ON CONFLICT DO NOTHING;
    INSERT INTO schema_version (version) VALUES (2);
  END IF;
END
$$;
