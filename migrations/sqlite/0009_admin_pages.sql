-- The admin pages: the audit log filtered by actor or by kind, and a webhook's deliveries, each
-- newest first. Without these, a rare actor, kind or quiet webhook walks the whole table to fill
-- a page; each costs one more index entry per event or delivery written.
create index audit_event_actor on audit_event (actor, seq);
create index audit_event_kind on audit_event (kind, seq);
create index delivery_destination on delivery (kind, destination, id);
