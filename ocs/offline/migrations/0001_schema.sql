-- 0001: the offline billing schema. Every table carries tenant_id; row-level security
-- (0002) restricts each row to the tenant named by the session setting app.tenant.
-- Money is bigint minor units of the row's currency. Times are timestamptz (UTC).

-- No extension: personal data is encrypted in the application (ocs/offline/crypto.py), and
-- the embedded PostgreSQL (pgserver) ships none. This file once created pgcrypto, unused;
-- migrations are recorded by version only (schema_migrations, no checksum), so a database
-- migrated before keeps the unused extension and is otherwise identical.

CREATE TABLE tenants (
    tenant_id    text PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    country      text NOT NULL DEFAULT '',
    time_zone    text NOT NULL DEFAULT 'UTC',
    currency     text NOT NULL DEFAULT 'EUR'
);

-- Per-tenant data keys, wrapped (AES-GCM) by the installation master key. The application
-- unwraps them; the database never sees a plain key.
CREATE TABLE tenant_keys (
    tenant_id    text PRIMARY KEY REFERENCES tenants,
    wrapped_key  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    tenant_id        text NOT NULL REFERENCES tenants,
    account_id       text NOT NULL,
    name             text NOT NULL DEFAULT '',
    parent_id        text,
    kind             text NOT NULL DEFAULT 'enterprise',
    payment          text NOT NULL DEFAULT 'postpaid',
    currency         text NOT NULL,
    tax_profile      text,
    country          text NOT NULL DEFAULT '',
    accounting_group text NOT NULL DEFAULT '',
    bill_day         smallint NOT NULL CHECK (bill_day BETWEEN 1 AND 28),
    template         text NOT NULL DEFAULT 'standard',
    PRIMARY KEY (tenant_id, account_id)
);

-- One row per (SIM, twin). IMSI and MSISDN are encrypted (AES-GCM, per-tenant key) and
-- found by blind index (HMAC-SHA256 with a per-tenant index key).
CREATE TABLE subscriptions (
    tenant_id      text NOT NULL REFERENCES tenants,
    sub_id         bigint GENERATED ALWAYS AS IDENTITY,
    imsi_bidx      bytea NOT NULL,
    twin           text NOT NULL,
    imsi_enc       bytea NOT NULL,
    msisdn_enc     bytea,
    msisdn_bidx    bytea,
    account_id     text NOT NULL,
    plan_id        text,
    payer          text NOT NULL DEFAULT '',
    status         text NOT NULL DEFAULT 'active',
    activated_at   timestamptz NOT NULL,
    terminated_at  timestamptz,
    PRIMARY KEY (tenant_id, sub_id),
    UNIQUE (tenant_id, imsi_bidx, twin)
);
CREATE INDEX subscriptions_account ON subscriptions (tenant_id, account_id);
CREATE INDEX subscriptions_msisdn ON subscriptions (tenant_id, msisdn_bidx);

-- Status and ownership changes: the state from `at` on (pro rata of recurring fees).
CREATE TABLE subscription_events (
    tenant_id   text NOT NULL REFERENCES tenants,
    sub_id      bigint NOT NULL,
    at          timestamptz NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    account_id  text NOT NULL,
    PRIMARY KEY (tenant_id, sub_id, at)
);

-- Rated usage records drained from the online streams. record_key is unique per tenant
-- (kind:request id), which makes the drain idempotent.
CREATE TABLE usage_records (
    tenant_id    text NOT NULL REFERENCES tenants,
    record_key   text NOT NULL,
    stream_id    text NOT NULL,
    kind         text NOT NULL,
    payer        text NOT NULL,
    ts           timestamptz NOT NULL,
    unit         text NOT NULL DEFAULT '',
    units        bigint NOT NULL DEFAULT 0,
    money        bigint NOT NULL DEFAULT 0,
    overrun      bigint NOT NULL DEFAULT 0,
    session_id   text,
    rating_group integer,
    imsi_bidx    bytea,
    twin         text,
    account_id   text,
    service      text,
    alloc        jsonb,
    ctx          jsonb,
    source       text NOT NULL DEFAULT 'online',
    PRIMARY KEY (tenant_id, record_key)
);
CREATE INDEX usage_records_account_ts ON usage_records (tenant_id, account_id, ts);
CREATE INDEX usage_records_session ON usage_records (tenant_id, session_id);

-- Network CDRs imported from files (PGW/SGW/CHF), IMSI encrypted as above.
CREATE TABLE network_cdrs (
    tenant_id      text NOT NULL REFERENCES tenants,
    cdr_key        text NOT NULL,
    source_file    text NOT NULL,
    record_type    text NOT NULL,
    charging_id    text NOT NULL,
    session_id     text,
    imsi_bidx      bytea NOT NULL,
    imsi_enc       bytea NOT NULL,
    msisdn_enc     bytea,
    started_at     timestamptz NOT NULL,
    ended_at       timestamptz NOT NULL,
    rating_group   integer,
    apn            text,
    plmn           text,
    rat_type       text,
    service        text NOT NULL DEFAULT 'data',
    units          bigint NOT NULL,
    matched_record text,
    rated_record   text,
    PRIMARY KEY (tenant_id, cdr_key)
);
CREATE INDEX network_cdrs_session ON network_cdrs (tenant_id, session_id);

CREATE TABLE tax_rules (
    tenant_id      text NOT NULL REFERENCES tenants,
    profile        text NOT NULL,
    country        text NOT NULL DEFAULT '*',
    product_class  text NOT NULL DEFAULT '*',
    rate_percent   numeric(7, 4) NOT NULL,
    treatment      text NOT NULL DEFAULT 'standard'
        CHECK (treatment IN ('standard', 'reverse_charge', 'exempt')),
    PRIMARY KEY (tenant_id, profile, country, product_class)
);

-- Commercial terms of pools (the catalogue has sizes, the bill run needs fees/overage).
CREATE TABLE pool_terms (
    tenant_id       text NOT NULL REFERENCES tenants,
    pool_id         text NOT NULL,
    account_id      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('static', 'flexible', 'adaptive')),
    currency        text NOT NULL,
    payer           text NOT NULL,
    fee             bigint NOT NULL DEFAULT 0,
    size            bigint NOT NULL DEFAULT 0,
    per_sim         bigint NOT NULL DEFAULT 0,
    overage_per     bigint NOT NULL DEFAULT 1000000,
    overage_price   bigint NOT NULL DEFAULT 0,
    ladder          jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, pool_id)
);

CREATE TABLE one_time_charges (
    tenant_id    text NOT NULL REFERENCES tenants,
    charge_id    bigint GENERATED ALWAYS AS IDENTITY,
    account_id   text NOT NULL,
    at           timestamptz NOT NULL,
    description  text NOT NULL,
    amount       bigint NOT NULL,
    currency     text NOT NULL,
    product_class text NOT NULL DEFAULT 'service',
    PRIMARY KEY (tenant_id, charge_id)
);

CREATE TABLE topoff_purchases (
    tenant_id    text NOT NULL REFERENCES tenants,
    purchase_key text NOT NULL,
    account_id   text NOT NULL,
    addon_id     text NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, purchase_key)
);

CREATE TABLE bill_runs (
    tenant_id     text NOT NULL REFERENCES tenants,
    run_id        bigint GENERATED ALWAYS AS IDENTITY,
    run_key       text NOT NULL,
    bill_day      smallint NOT NULL,
    account_id    text,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'running',
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (tenant_id, run_id),
    UNIQUE (tenant_id, run_key)
);

-- One row per account step of a run: committed with the account's invoices.
CREATE TABLE bill_run_accounts (
    tenant_id   text NOT NULL REFERENCES tenants,
    run_id      bigint NOT NULL,
    account_id  text NOT NULL,
    invoices    integer NOT NULL DEFAULT 0,
    done_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, account_id)
);

-- Gapless numbering: one counter row per tenant, incremented in the invoice's transaction.
CREATE TABLE invoice_counters (
    tenant_id   text PRIMARY KEY REFERENCES tenants,
    last_number bigint NOT NULL DEFAULT 0
);

CREATE TABLE invoices (
    tenant_id     text NOT NULL REFERENCES tenants,
    number        bigint NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('invoice', 'credit_note', 'debit_note')),
    refers_to     bigint,
    run_id        bigint,
    account_id    text NOT NULL,
    issuer        text NOT NULL,
    level         text NOT NULL DEFAULT 'retail',
    currency      text NOT NULL,
    period_start  timestamptz,
    period_end    timestamptz,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    net           bigint NOT NULL,
    tax           bigint NOT NULL,
    gross         bigint NOT NULL,
    template      text NOT NULL DEFAULT 'standard',
    reason        text,
    PRIMARY KEY (tenant_id, number)
);
CREATE INDEX invoices_account ON invoices (tenant_id, account_id);

CREATE TABLE invoice_lines (
    tenant_id        text NOT NULL REFERENCES tenants,
    number           bigint NOT NULL,
    line_no          integer NOT NULL,
    kind             text NOT NULL,
    description      text NOT NULL,
    accounting_group text NOT NULL DEFAULT '',
    product_class    text NOT NULL DEFAULT '',
    quantity         numeric NOT NULL DEFAULT 1,
    unit             text NOT NULL DEFAULT '',
    net              bigint NOT NULL,
    tax_rate         numeric(7, 4) NOT NULL DEFAULT 0,
    tax_treatment    text NOT NULL DEFAULT 'standard',
    tax              bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, number, line_no),
    FOREIGN KEY (tenant_id, number) REFERENCES invoices (tenant_id, number)
);

-- Issued documents are immutable: no UPDATE or DELETE of invoices and their lines.
CREATE FUNCTION ocs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'issued invoices never change (%.%)', TG_TABLE_NAME, TG_OP;
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION ocs_refuse_change();
CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION ocs_refuse_change();
