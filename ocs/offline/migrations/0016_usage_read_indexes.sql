-- 0016: the indexes of the usage read API and export (issue 16, docs/usage-api.md).
--
-- A SIM's usage by day or month finds its drained records by the IMSI's blind index and time
-- (usage_records has no plain IMSI); a pool's, wallet's or contract's by payer tag and time
-- (GET /v1/wallets/{id}/transactions, the payer usage view and `ocs audit`, which read every
-- row of the tenant before). An account's use the existing (tenant_id, account_id, ts); the
-- export reads the tenant's rows of a period once, in a scan of its own (no index for it).
-- Each index costs the drain one more index insertion per record (docs/benchmarks-usage.md).
-- Built inside the migration's transaction, as 0007: the drain waits while they are built.
CREATE INDEX IF NOT EXISTS usage_records_sim_ts ON usage_records (tenant_id, imsi_bidx, ts);
CREATE INDEX IF NOT EXISTS usage_records_payer_ts ON usage_records (tenant_id, payer, ts);
