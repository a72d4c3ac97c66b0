-- 0007: two indexes of the bill run (issue 7).
--
-- Each account step of a run looks up the account's last run (ocs.offline.late.last_billed:
-- bill_run_accounts by account_id, under the tenant's row-level security). The primary key
-- (tenant_id, run_id, account_id) cannot serve it, so without this index that lookup read
-- every account row of every past run, slower with each run of the tenant's history.
CREATE INDEX IF NOT EXISTS bill_run_accounts_account
    ON bill_run_accounts (tenant_id, account_id);

-- The run's purchase scan (ocs.offline.purchases: kind = 'adjust' records by time stamp)
-- read every usage record of the tenant. Partial: usage records are not in it, so the drain
-- (which writes usage rows almost only) pays nothing for it, and it stays small.
-- Built inside the migration's transaction (not CONCURRENTLY): on a large usage_records the
-- build blocks the drain's writes while it scans the table once; the drain waits, it loses
-- nothing (docs/offline.md, "Migrations").
CREATE INDEX IF NOT EXISTS usage_records_adjust_ts
    ON usage_records (tenant_id, ts) WHERE kind = 'adjust';
