-- Why a request was approved without review (an admin's own, a requester in an exempt group, …),
-- as JSON ({"reason": "admin"}, {"reason": "exempt_group", "group": "sre"}); null for a request
-- that was held for approval. Cards and events say it, so a run that skipped review is seen.
alter table access_request add column auto_approval text;
