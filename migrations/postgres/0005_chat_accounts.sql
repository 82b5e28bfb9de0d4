-- Chat accounts (a Slack user, later a Teams user) linked to hoopbot users, so a click in chat is
-- authorized as the person behind it. A link is made with proof from both sides: a one-time code
-- shown in chat and confirmed by the signed-in user (only its SHA-256 is kept), or a verified
-- email where the operator allows it.
create table chat_account (
    kind       text not null,
    account    text not null,
    email      text not null,
    linked_at  bigint not null,
    linked_by  text not null,
    primary key (kind, account)
);
create index chat_account_email on chat_account (kind, lower(email));

create table link_code (
    code_sha256  text primary key,
    kind         text not null,
    account      text not null,
    created_at   bigint not null,
    expires_at   bigint not null,
    used_at      bigint
);

-- Every copy of a request's chat card is looked up by request: on each delivery, and on each read
-- of the request (its `messages`).
create index posted_message_request on posted_message (request_id, kind);
