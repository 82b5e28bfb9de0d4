-- The audit chain is keyed (HMAC-SHA256 with [server] audit_key) from here on. Events already
-- stored keep their unkeyed SHA-256 hashes; the head remembers how far those go.
alter table audit_head add column unkeyed_until bigint not null default 0;
update audit_head set unkeyed_until = seq;
