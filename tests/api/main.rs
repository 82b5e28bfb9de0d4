//! One integration-test binary: a real server on a random port, on SQLite and on Postgres.

mod helpers;

mod audit_trail;
mod bad_input;
mod browser;
mod cli;
mod clock;
mod deliveries;
mod draining;
mod execution;
mod fake_idp;
mod fake_slack;
mod flow;
mod layers;
mod link_codes;
mod openapi;
mod ops;
mod processes;
mod receiver;
mod review;
mod security;
mod shares;
mod slack;
mod slack_manifests;
mod slack_onboarding;
mod slack_origin;
mod sso;
mod waiting;
mod web;
mod web_admin;
mod webhooks;
mod without_review;
mod write_path;
