-- Times are milliseconds since the Unix epoch (bigint) on both backends, so comparisons and
-- indexes behave the same on SQLite and Postgres.

create table access_request (
    id               text primary key,
    connection       text not null,
    command          text not null,
    command_sha256   text not null,
    requester        text not null,
    justification    text,
    status           text not null,
    created_at       bigint not null,
    expires_at       bigint not null,
    decided_at       bigint,
    version          bigint not null,
    rejected_by      text,
    rejection_reason text,
    rejected_at      bigint,
    rejected_via     text,
    -- JSON of the execution result, reported by the agent.
    result           text,
    -- The agent that claimed the job, and until when its lease holds without a heartbeat.
    agent            text,
    lease_until      bigint
);
create index access_request_status_expiry on access_request (status, expires_at);
create index access_request_jobs on access_request (status, connection, decided_at);
create index access_request_requester on access_request (requester, id);
create index access_request_connection on access_request (connection, id);

-- One row per approval group of a request, snapshotted from the policy at submission.
create table access_request_approval (
    request_id  text not null references access_request (id),
    position    bigint not null,
    group_name  text not null,
    status      text not null,
    decided_by  text,
    decided_at  bigint,
    via         text,
    primary key (request_id, group_name)
);

-- Append-only, hash-chained. audit_head holds the chain's last sequence number and hash.
create table audit_event (
    seq         bigint primary key,
    request_id  text not null,
    kind        text not null,
    actor       text not null,
    channel     text not null,
    at          bigint not null,
    detail      text not null,
    prev_hash   text not null,
    hash        text not null
);
create index audit_event_request on audit_event (request_id, seq);

create table audit_head (
    id    bigint primary key,
    seq   bigint not null,
    hash  text not null
);
insert into audit_head (id, seq, hash) values (1, 0, '');

-- Transactional outbox: written in the same transaction as the state change it announces.
create table outbox (
    id               integer primary key autoincrement,
    request_id       text not null,
    topic            text not null,
    payload          text not null,
    created_at       bigint not null,
    attempts         bigint not null default 0,
    next_attempt_at  bigint not null,
    delivered_at     bigint,
    last_error       text
);
create index outbox_due on outbox (delivered_at, next_attempt_at);

-- API and agent tokens: only the SHA-256 of a token is kept.
create table api_token (
    token_sha256  text primary key,
    subject       text not null,
    kind          text not null,
    created_at    bigint not null,
    revoked_at    bigint
);
