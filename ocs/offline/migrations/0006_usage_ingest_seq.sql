-- 0006: the ingest watermark of late usage (issue 6, docs/offline.md "Late usage").
--
-- usage_records.seq numbers every record in the order it reached the database (a sequence
-- default: the drain's COPY/INSERT and batch rating need no change). Rows stored before this
-- migration keep NULL: they count as ingested before any watermark, never as late. The
-- sequence caches no values (CACHE 1), so numbers are handed out in time order across
-- sessions: the bill run's watermark step (LOCK TABLE ... IN SHARE MODE, read last_value)
-- then knows every row numbered up to the watermark is committed.
--
-- bill_run_accounts.watermark is the highest seq the account's run covered. The next run of
-- the account charges the records with seq above it and a time stamp before its period as
-- late usage. Rows written before this migration keep 0 (every numbered record is newer).
CREATE SEQUENCE IF NOT EXISTS usage_records_seq AS bigint CACHE 1;
ALTER TABLE usage_records ADD COLUMN IF NOT EXISTS seq bigint;
ALTER TABLE usage_records ALTER COLUMN seq SET DEFAULT nextval('usage_records_seq');
ALTER SEQUENCE usage_records_seq OWNED BY usage_records.seq;
-- No index on seq: the bill run finds late records in the scans it makes anyway (a BRIN index
-- on seq cost the drain ~1 us of backend CPU a record and no query used it).
ALTER TABLE bill_run_accounts ADD COLUMN IF NOT EXISTS watermark bigint NOT NULL DEFAULT 0;
GRANT USAGE, SELECT ON SEQUENCE usage_records_seq TO ocs_app;
