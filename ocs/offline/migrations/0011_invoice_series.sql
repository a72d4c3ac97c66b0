-- 0011: invoices are numbered in a series of their own per tenant, like credit and debit notes
-- (0010), so a note no longer takes a number out of the invoices' sequence: invoice numbers
-- are gapless again. `number` stays the document's key (what `refers_to` and the lines hold);
-- what is printed, sent (BT-1) and given to `ocs invoice export --number` is the series
-- number with the kind's prefix (invoices none, CN-, DN-). Invoices issued before 0011 keep
-- the number they were issued with; the series goes on after the highest.
ALTER TABLE invoice_counters ADD COLUMN IF NOT EXISTS last_invoice bigint NOT NULL DEFAULT 0;
UPDATE invoices SET series_number = number WHERE kind = 'invoice' AND series_number IS NULL;
UPDATE invoice_counters c SET last_invoice = coalesce(
    (SELECT max(series_number) FROM invoices i WHERE i.tenant_id = c.tenant_id AND i.kind = 'invoice'), 0);
