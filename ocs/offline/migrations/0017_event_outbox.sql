-- 0017: the outbox of the events of issued documents (invoice.issued, credit_note.issued,
-- debit_note.issued; docs/webhooks.md). The row is written in the transaction that issues
-- the document, so an event exists if and only if its document was committed; a relay
-- (ocs.offline.event_relay: after each bill run and note, and every pass of `ocs cdr
-- drain`) copies pending rows into the tenant's Redis outbox, which the webhook dispatcher
-- delivers from, and then stamps relayed_at. event_id is derived from the document (tenant,
-- type, document key): a relay repeated after a crash carries the same id.
CREATE TABLE IF NOT EXISTS event_outbox (
    tenant_id   text NOT NULL REFERENCES tenants,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    event_id    text NOT NULL,
    type        text NOT NULL,
    subject     text NOT NULL,  -- JSON as delivered (exact integers)
    data        text NOT NULL,  -- JSON as delivered
    time_ms     bigint NOT NULL,  -- when the document was issued, epoch milliseconds
    relayed_at  timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX IF NOT EXISTS event_outbox_pending ON event_outbox (tenant_id, seq)
    WHERE relayed_at IS NULL;

ALTER TABLE event_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_outbox FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON event_outbox;
CREATE POLICY tenant_isolation ON event_outbox
    USING (tenant_id = current_setting('app.tenant', true))
    WITH CHECK (tenant_id = current_setting('app.tenant', true));
GRANT SELECT, INSERT, UPDATE ON event_outbox TO ocs_app;
