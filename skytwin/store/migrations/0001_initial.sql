-- SkyTwin's initial schema.
-- Invariants enforced here rather than in code:
--   * a signal is unique on (user, source, external id): re-polling is a no-op;
--   * one decision per signal, one approval request per decision,
--     one execution per approval request: an approval executes at most once;
--   * the cursor of a connector lives beside the signals it produced, so both
--     commit in one transaction.

create table users (
    id          bigserial primary key,
    email       text not null unique check (email = lower(email) and email like '%_@_%'),
    name        text not null check (length(name) between 1 and 200),
    settings    jsonb not null default '{}'::jsonb,
    created_at  timestamptz not null default now(),
    deleted_at  timestamptz
);

-- API tokens are stored as SHA-256 hashes; the token itself is shown once.
create table api_tokens (
    id            bigserial primary key,
    user_id       bigint not null references users (id) on delete cascade,
    token_hash    bytea not null unique,
    label         text not null default '',
    is_admin      boolean not null default false,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
create index api_tokens_user_idx on api_tokens (user_id);

-- OAuth tokens are encrypted by the application before they get here.
create table oauth_connections (
    id                 bigserial primary key,
    user_id            bigint not null references users (id) on delete cascade,
    provider           text not null check (provider in ('google')),
    account_email      text not null,
    scopes             text not null default '',
    refresh_token_enc  text,
    access_token_enc   text,
    access_expires_at  timestamptz,
    status             text not null default 'active'
                       check (status in ('active', 'needs_reauth', 'disconnected')),
    status_reason      text,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    unique (user_id, provider, account_email)
);

-- Single-use, expiring OAuth "state" values, bound to the signed-in user.
create table oauth_states (
    state_hash          bytea primary key,
    user_id             bigint not null references users (id) on delete cascade,
    code_verifier_enc   text not null,
    redirect_uri        text not null,
    created_at          timestamptz not null default now(),
    expires_at          timestamptz not null,
    used_at             timestamptz
);

create table connector_cursors (
    connection_id    bigint not null references oauth_connections (id) on delete cascade,
    connector        text not null check (connector in ('gmail', 'calendar')),
    cursor           text,
    last_success_at  timestamptz,
    last_error       text,
    last_error_at    timestamptz,
    updated_at       timestamptz not null default now(),
    primary key (connection_id, connector)
);

create table signals (
    id                bigserial primary key,
    user_id           bigint not null references users (id) on delete cascade,
    source            text not null check (length(source) between 1 and 64),
    type              text not null check (length(type) between 1 and 64),
    external_id       text not null check (length(external_id) between 1 and 512),
    occurred_at       timestamptz not null,
    data              jsonb not null default '{}'::jsonb,
    ingested_at       timestamptz not null default now(),
    processed_at      timestamptz,
    process_attempts  integer not null default 0,
    process_error     text,
    unique (user_id, source, external_id)
);
create index signals_user_newest_idx on signals (user_id, id desc);
create index signals_unprocessed_idx on signals (id) where processed_at is null;

create table decisions (
    id                 bigserial primary key,
    signal_id          bigint not null unique references signals (id) on delete cascade,
    user_id            bigint not null references users (id) on delete cascade,
    action             text not null,
    params             jsonb not null default '{}'::jsonb,
    risk               text not null check (risk in ('low', 'medium', 'high')),
    requires_approval  boolean not null,
    reason             text not null,
    created_at         timestamptz not null default now()
);

create table approval_requests (
    id               bigserial primary key,
    decision_id      bigint not null unique references decisions (id) on delete cascade,
    user_id          bigint not null references users (id) on delete cascade,
    urgency          text not null check (urgency in ('high', 'normal', 'low')),
    status           text not null default 'pending'
                     check (status in ('pending', 'approved', 'rejected', 'expired')),
    expires_at       timestamptz not null,
    responded_at     timestamptz,
    response_reason  text,
    created_at       timestamptz not null default now()
);
create index approval_requests_pending_idx
    on approval_requests (user_id, expires_at) where status = 'pending';

-- The outbox: an approved action becomes exactly one execution row, written in
-- the same transaction as the approval. attempted_at is recorded before the
-- call, so a crash between claim and result is never blindly repeated.
create table executions (
    id            bigserial primary key,
    approval_id   bigint unique references approval_requests (id) on delete cascade,
    decision_id   bigint not null references decisions (id) on delete cascade,
    user_id       bigint not null references users (id) on delete cascade,
    action        text not null,
    params        jsonb not null default '{}'::jsonb,
    status        text not null default 'pending'
                  check (status in ('pending', 'running', 'succeeded', 'failed')),
    attempts      integer not null default 0,
    attempted_at  timestamptz,
    result        jsonb,
    error         text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
create index executions_pending_idx on executions (id) where status in ('pending', 'running');
