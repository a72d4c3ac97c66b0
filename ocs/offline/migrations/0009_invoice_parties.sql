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
