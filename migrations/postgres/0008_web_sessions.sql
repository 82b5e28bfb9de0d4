-- Web app sessions: a signed-in browser's cookie names one (only its SHA-256 is kept). A session
-- acts with the API token it was opened with, so revoking that token ends it; signing out ends it
-- at once. `csrf` is the session's token for the forms its pages post.
create table web_session (
    sha256        text primary key,
    token_sha256  text not null,
    csrf          text not null,
    created_at    bigint not null,
    expires_at    bigint not null,
    ended_at      bigint
);
create index web_session_token on web_session (token_sha256);
