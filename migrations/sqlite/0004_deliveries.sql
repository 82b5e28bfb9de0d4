-- Deliveries: each outbox event fans out into one delivery per destination (a webhook endpoint,
-- later a Slack channel or a Teams conversation), each with its own attempts and schedule.
-- Events committed before deliveries existed are not sent to destinations configured now.
update outbox set delivered_at = created_at where delivered_at is null;
-- An event written while no destination exists has no snapshot (no payload): nothing will ever
-- deliver it, so no change pays for writing its request out. SQLite cannot drop a NOT NULL, so
-- the table is copied, keeping its ids and the counter new ids continue from.
create table outbox_copy (
    id               integer primary key autoincrement,
    request_id       text not null,
    topic            text not null,
    payload          text,
    created_at       bigint not null,
    attempts         bigint not null default 0,
    next_attempt_at  bigint not null,
    delivered_at     bigint,
    last_error       text
);
insert into outbox_copy select id, request_id, topic, payload, created_at, attempts,
    next_attempt_at, delivered_at, last_error from outbox;
delete from sqlite_sequence where name = 'outbox_copy';
insert into sqlite_sequence (name, seq) select 'outbox_copy', seq from sqlite_sequence where name = 'outbox';
drop table outbox;
alter table outbox_copy rename to outbox;
create index outbox_due on outbox (delivered_at, next_attempt_at);

create table delivery (
    id               integer primary key autoincrement,
    outbox_id        bigint not null,
    request_id       text not null,
    kind             text not null,
    destination      text not null,
    event            text not null,
    version          bigint not null,
    -- pending, delivered, given_up (retried until give_up_at), dropped (destination disabled)
    state            text not null,
    attempts         bigint not null default 0,
    created_at       bigint not null,
    next_attempt_at  bigint not null,
    give_up_at       bigint not null,
    -- While a replica is delivering it: claims skip it until then, so a replica killed mid-delivery
    -- leaves it to another once this passes.
    lease_until      bigint,
    last_status      bigint,
    last_error       text,
    delivered_at     bigint
);
create unique index delivery_once on delivery (outbox_id, kind, destination);
create index delivery_due on delivery (state, next_attempt_at);
-- Deliveries of one request to one destination go out in outbox order.
create index delivery_order on delivery (request_id, kind, destination, outbox_id);

-- Every attempt (and every test ping), for "what did the endpoint answer".
create table delivery_attempt (
    id           integer primary key autoincrement,
    delivery_id  bigint,
    kind         text not null,
    destination  text not null,
    request_id   text,
    event        text not null,
    attempt      bigint not null,
    at           bigint not null,
    status       bigint,
    latency_ms   bigint not null,
    error        text
);
create index delivery_attempt_destination on delivery_attempt (kind, destination, id);

-- Each destination as first configured: it receives the events after `since_outbox_id`, never
-- the history before it. Until some destination exists, events are written without a payload
-- and as fanned out already.
create table destination (
    kind             text not null,
    destination      text not null,
    since_outbox_id  bigint not null,
    primary key (kind, destination)
);

-- Destinations switched off by their receiver (a webhook answering 410). Keyed by the SHA-256 of
-- the address it answered at, so pointing the destination somewhere else switches it back on.
create table destination_disabled (
    kind            text not null,
    destination     text not null,
    address_sha256  text not null,
    disabled_at     bigint not null,
    reason          text not null,
    primary key (kind, destination, address_sha256)
);

-- Where a message about a request was posted (a chat card), so any replica can edit it later.
create table posted_message (
    kind         text not null,
    destination  text not null,
    request_id   text not null,
    -- The destination's own ids for the message (e.g. channel and ts), as JSON.
    external     text not null,
    version      bigint not null,
    posted_at    bigint not null,
    updated_at   bigint not null,
    primary key (kind, destination, request_id)
);
