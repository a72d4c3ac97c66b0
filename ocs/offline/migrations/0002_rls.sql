-- 0002: row-level security by tenant and the application role.
--
-- The application connects (or SET ROLEs) as ocs_app, which owns nothing, so every policy
-- applies; each transaction names its tenant with set_config('app.tenant', ..., true).
-- With no tenant set, current_setting(..., true) is NULL and no row is visible.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ocs_app') THEN
        CREATE ROLE ocs_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created concurrently by another database's migration
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenants', 'tenant_keys', 'accounts', 'subscriptions',
        'subscription_events', 'usage_records', 'network_cdrs', 'tax_rules', 'pool_terms',
        'one_time_charges', 'topoff_purchases', 'bill_runs', 'bill_run_accounts',
        'invoice_counters', 'invoices', 'invoice_lines']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = current_setting(''app.tenant'', true)) '
            'WITH CHECK (tenant_id = current_setting(''app.tenant'', true))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO ocs_app', t);
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO ocs_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ocs_app;
