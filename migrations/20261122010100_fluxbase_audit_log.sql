-- The shared audit log: modules write through crate::audit, admins read /api/v1/audit.

CREATE TABLE fluxbase.audit_log (
  id         bigserial PRIMARY KEY,
  at         timestamptz NOT NULL DEFAULT now(),
  actor      text,
  actor_role text,
  action     text NOT NULL,
  target     text,
  ip         inet,
  user_agent text,
  request_id text,
  details    jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX audit_log_at_idx ON fluxbase.audit_log (at);
CREATE INDEX audit_log_action_idx ON fluxbase.audit_log (action, at);
CREATE INDEX audit_log_actor_idx ON fluxbase.audit_log (actor, at);

REVOKE ALL ON fluxbase.audit_log FROM PUBLIC;
