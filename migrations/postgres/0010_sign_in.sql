-- Tokens that end on their own: a token made by single sign-on (the web app's session, or
-- `hoop login` in a browser) lasts `oidc.token_ttl`; `hoop token create --expires` sets one by
-- hand. `claimed_groups` (a JSON array) are the groups the identity provider said its holder is
-- in when it was made: they count beside the config's groups, and are the only ones of someone
-- signed in without a [[users]] entry (`oidc.allow_unlisted_users`).
alter table api_token add column expires_at bigint;
alter table api_token add column claimed_groups text;

-- A single sign-on on its way through the identity provider: what the browser's return must
-- match (the `state` it carries, only its SHA-256 kept), the nonce the ID token must carry, the
-- PKCE verifier the code is exchanged with, and the local page to go back to. Taken once.
create table sign_in_attempt (
    state_sha256   text primary key,
    nonce          text not null,
    pkce_verifier  text not null,
    next           text not null,
    expires_at     bigint not null
);

-- `hoop login` in a browser: the signed-in browser allowed a command line on the same computer
-- to have a token of its own. The command line proves it is the one that asked by the verifier
-- behind `challenge` (SHA-256, as PKCE); the code it was handed is taken once.
create table cli_grant (
    code_sha256   text primary key,
    challenge     text not null,
    token_sha256  text not null,
    expires_at    bigint not null
);
