//! The configuration as written in the file, before validation: what serde reads.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::ConnectionType;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentConfig {
    pub(super) agent: RawAgent,
    #[serde(default)]
    pub(super) connections: Vec<RawConnection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) server_url: String,
    pub(super) token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) users: Vec<RawUser>,
    #[serde(default)]
    pub(super) connections: Vec<RawConnection>,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
    pub(super) slack: Option<Spanned<RawSlack>>,
    pub(super) oidc: Option<Spanned<RawOidc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub(super) issuer: Spanned<String>,
    pub(super) client_id: Spanned<String>,
    pub(super) client_secret: Spanned<String>,
    pub(super) groups_claim: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_unlisted_users: bool,
    pub(super) token_ttl: Option<Spanned<String>>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlack {
    pub(super) signing_secret: Spanned<String>,
    pub(super) bot_token: Spanned<String>,
    pub(super) app_token: Option<Spanned<String>>,
    pub(super) app_id: Option<Spanned<String>>,
    pub(super) channel: Spanned<String>,
    pub(super) api_base_url: Option<Spanned<String>>,
    pub(super) slash_command: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) link_by_email: bool,
    pub(super) message_interval: Option<Spanned<String>>,
    pub(super) give_up_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) secret: Spanned<String>,
    pub(super) events: Option<Spanned<Vec<String>>>,
    #[serde(default = "yes")]
    pub(super) include_command: bool,
    #[serde(default)]
    pub(super) allow_private: bool,
    pub(super) give_up_after: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: Spanned<String>,
    pub(super) public_url: Option<String>,
    #[serde(default = "default_database_url")]
    pub(super) database_url: String,
    #[serde(default = "default_admin_group")]
    pub(super) admin_group: String,
    pub(super) max_command_bytes: Option<Spanned<usize>>,
    pub(super) job_lease: Option<Spanned<String>>,
    pub(super) audit_key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allow_embedded_command: bool,
    pub(super) header_read_timeout: Option<Spanned<String>>,
    pub(super) body_read_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) email: Spanned<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) kind: ConnectionType,
    pub(super) url: Option<String>,
    pub(super) command: Option<Spanned<Vec<String>>>,
    pub(super) agent: Option<String>,
    pub(super) pickup_timeout: Option<Spanned<String>>,
    pub(super) statement_timeout: Option<Spanned<String>>,
    pub(super) max_rows: Option<Spanned<usize>>,
    pub(super) max_output_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) slack_channel: Option<Spanned<String>>,
    pub(super) access_requests: Option<RawAccessRequests>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessRequests {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    pub(super) approval_groups: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) require_approval_for: Option<Spanned<RawRequireFor>>,
    #[serde(default)]
    pub(super) exempt_groups: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    pub(super) admin_auto_approve: bool,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawRequireFor {
    Keyword(String),
    Groups(Vec<String>),
}

pub(super) fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8009".to_string())
}
pub(super) fn default_database_url() -> String {
    "sqlite://hoop.db".to_string()
}
pub(super) fn default_admin_group() -> String {
    "admin".to_string()
}
pub(super) fn yes() -> bool {
    true
}
