-- 0003: indexes the bill run needs at 100,000 subscriptions: an account's subscriptions by
-- their events, a pool's members by payer.
CREATE INDEX IF NOT EXISTS subscription_events_account
    ON subscription_events (tenant_id, account_id);
CREATE INDEX IF NOT EXISTS subscriptions_payer ON subscriptions (tenant_id, payer);
