-- 0012: SIM lifecycle states (docs/sim-states.md). A subscription's status is its SIM's
-- state (or its twin's own status while the SIM is active): recurring fees run while it is
-- active only, so inventory, test and deactivated SIMs are not charged them either.
ALTER TABLE subscription_events DROP CONSTRAINT IF EXISTS subscription_events_status_check;
ALTER TABLE subscription_events ADD CONSTRAINT subscription_events_status_check CHECK
    (status IN ('inventory', 'test', 'active', 'suspended', 'deactivated', 'terminated'));

-- Every move of a SIM's state, drained from Redis (ocs:api:{api:T}:statemoves) by
-- `ocs cdr drain`: who made it (token:<id>, cli:<user>, lifecycle, system), when, why. The
-- IMSI is encrypted and found by blind index like everywhere else; a move of a whole
-- sim_range has no IMSI. stream_id (the Redis entry id) makes the drain idempotent.
CREATE TABLE IF NOT EXISTS sim_state_changes (
    tenant_id   text NOT NULL,
    stream_id   text NOT NULL,
    imsi_bidx   bytea,
    imsi_enc    bytea,
    range_id    text,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    reason      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    revision    bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream_id)
);
CREATE INDEX IF NOT EXISTS sim_state_changes_imsi ON sim_state_changes (tenant_id, imsi_bidx, at);

ALTER TABLE sim_state_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE sim_state_changes FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON sim_state_changes;
CREATE POLICY tenant_isolation ON sim_state_changes
    USING (tenant_id = current_setting('app.tenant', true))
    WITH CHECK (tenant_id = current_setting('app.tenant', true));
GRANT SELECT, INSERT ON sim_state_changes TO ocs_app;
