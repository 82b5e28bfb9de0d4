-- Two-phase claims: a claim offers a job to one agent (`agent`, with the offer's end in
-- `lease_until`) while it stays `approved`; the agent confirms with a start that names this offer's
-- id. An offer nobody starts returns to `approved`, so a claim whose reply was lost loses no job.
alter table access_request add column offer text;
