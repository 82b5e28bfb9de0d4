-- Slack request signatures already accepted, so a captured request cannot be replayed within its
-- five-minute window, on this replica or any other. Only the SHA-256 of the signature is kept, and
-- only for as long as the signature could still pass its time check (rows past that are deleted
-- as new ones come in).
create table slack_signature (
    sha256   text primary key,
    seen_at  bigint not null
);
create index slack_signature_seen_at on slack_signature (seen_at);
