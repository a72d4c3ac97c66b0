-- 0010: credit and debit notes are numbered in series of their own per tenant (CN-1, CN-2, ...;
-- DN-1, ...), gapless like invoices: the tenant's counters row is locked until the note's
-- transaction commits. Notes issued before 0010 have none (they print their document number;
-- docs/invoices.md).
ALTER TABLE invoice_counters ADD COLUMN IF NOT EXISTS last_credit_note bigint NOT NULL DEFAULT 0;
ALTER TABLE invoice_counters ADD COLUMN IF NOT EXISTS last_debit_note bigint NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS series_number bigint;
CREATE UNIQUE INDEX IF NOT EXISTS invoices_series ON invoices (tenant_id, kind, series_number);
