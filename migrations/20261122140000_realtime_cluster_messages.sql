-- Realtime: cluster messages too large for NOTIFY's 8000-byte payload (broadcasts, presence
-- state). The sender stores the message here and NOTIFYs its id on `fluxbase_realtime`
-- ({"k":"x","id":…}); every instance's listener reads the row. Rows are deleted by the
-- instances after 2 minutes. Only the owner (the server) reads or writes this table;
-- realtime.send() reaches it through a SECURITY DEFINER function.

CREATE TABLE IF NOT EXISTS realtime.fluxbase_cluster_messages (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  payload text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS fluxbase_cluster_messages_created_at
  ON realtime.fluxbase_cluster_messages (created_at);
REVOKE ALL ON realtime.fluxbase_cluster_messages FROM PUBLIC, anon, authenticated, service_role;
