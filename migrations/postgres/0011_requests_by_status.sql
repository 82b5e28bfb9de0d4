-- Requests of one status, newest first (the web app's "Waiting for me" and a list filtered by
-- status): read in id order from this index and stopped at the page's size, instead of every
-- request of that status being sorted first.
create index access_request_status_id on access_request (status, id);
