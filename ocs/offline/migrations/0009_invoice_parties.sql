-- 0009: what an invoice must say about its seller and buyer (EN 16931): legal name, postal
-- address, VAT identification number, payment account and terms, the buyer's reference and
-- language. Accounts and tenants carry them (`party`, from the billing terms); every
-- document keeps a snapshot of both parties as they were when it was issued (issued
-- documents never change, an address that changes later does not touch them).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS party jsonb NOT NULL DEFAULT '{}';
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS party jsonb NOT NULL DEFAULT '{}';
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS language text NOT NULL DEFAULT 'en';
-- The legal note of an exempt or reverse-charge rule (BT-120), printed and sent per category.
ALTER TABLE tax_rules ADD COLUMN IF NOT EXISTS note text NOT NULL DEFAULT '';
-- NULL on documents issued before 0009: rendered with the parties as they are now.
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS seller jsonb;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS buyer jsonb;
ALTER TABLE invoice_lines ADD COLUMN IF NOT EXISTS unit_price numeric;
ALTER TABLE invoice_lines ADD COLUMN IF NOT EXISTS tax_note text NOT NULL DEFAULT '';
-- Credit and debit notes are numbered in series of their own per tenant (CN-1, CN-2, ...;
-- DN-1, ...), gapless like invoices: the tenant's counters row is locked until the note's
-- transaction commits. Notes issued before 0009 have none (they print their document number).
ALTER TABLE invoice_counters ADD COLUMN IF NOT EXISTS last_credit_note bigint NOT NULL DEFAULT 0;
ALTER TABLE invoice_counters ADD COLUMN IF NOT EXISTS last_debit_note bigint NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN IF NOT EXISTS series_number bigint;
CREATE UNIQUE INDEX IF NOT EXISTS invoices_series ON invoices (tenant_id, kind, series_number);
