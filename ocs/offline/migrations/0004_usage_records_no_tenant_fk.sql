-- 0004: usage_records without the per-row foreign key to tenants. Bulk inserts paid one
-- referential check (a row lock on the tenant) per record, ~20 % of the drain's insert time.
-- Every writer names one tenant that exists: the drain locks its tenant row (FOR KEY SHARE,
-- what the foreign key did per row) once per batch and fails the batch if it is missing;
-- batch rating inserts for network CDRs, which keep their own foreign key. Tenants are
-- never deleted.
ALTER TABLE usage_records DROP CONSTRAINT IF EXISTS usage_records_tenant_id_fkey;
