//! The effective configuration as admins see it: the loaded config written back as TOML, with
//! every secret masked.
//!
//! A secret is masked by its type, not by its name: `SecretString`, the audit key and a webhook's
//! signing secret are written through [`Shown`], whose only answer for them is [`MASK`]. Each
//! section is taken apart field by field with no `..`, so a field added to the config does not
//! compile until it is given its place here, and a secret-typed one cannot be shown as anything
//! but the mask. URLs keep their scheme, host, port and path; what may carry a credential
//! (a password, a lone user name, query values) is masked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use toml::{Table, Value};

use super::{
    Config, ConnectionConfig, ConnectionTarget, ConnectionType, OidcConfig, ServerConfig,
    SlackConfig, UserConfig, WebhookConfig,
};
use crate::audit::AuditKey;
use crate::domain::{ConnectionName, Email, Event, Policy, RequireApprovalFor};
use crate::webhook::signature::Secret;

/// What a secret is shown as.
pub const MASK: &str = "••••••";

impl Config {
    /// The configuration as loaded (defaults filled in, `${ENV}` substituted, environment
    /// overrides applied), as TOML, every secret masked.
    pub fn shown(&self) -> String {
        let Config {
            server,
            users,
            connections,
            webhooks,
            slack,
            oidc,
        } = self;
        let mut config = Table::new();
        config.insert("server".into(), Value::Table(server_section(server)));
        config.insert("users".into(), tables(users.iter().map(user_section)));
        config.insert(
            "connections".into(),
            tables(connections.iter().map(connection_section)),
        );
        config.insert(
            "webhooks".into(),
            tables(webhooks.iter().map(webhook_section)),
        );
        if let Some(slack) = slack {
            config.insert("slack".into(), Value::Table(slack_section(slack)));
        }
        if let Some(oidc) = oidc {
            config.insert("oidc".into(), Value::Table(oidc_section(oidc)));
        }
        toml::to_string(&config).unwrap_or_else(|e| format!("# cannot be written as TOML: {e}"))
    }
}

fn server_section(server: &ServerConfig) -> Table {
    let ServerConfig {
        listen,
        public_url,
        database_url,
        admin_group,
        max_command_bytes,
        job_lease,
        audit_key,
        allow_embedded_command,
        header_read_timeout,
        body_read_timeout,
        max_connections,
    } = server;
    let mut section = Table::new();
    put(&mut section, "listen", listen);
    put(&mut section, "public_url", public_url);
    put(&mut section, "database_url", &SecretUrl(database_url));
    put(&mut section, "admin_group", admin_group);
    put(&mut section, "max_command_bytes", max_command_bytes);
    put(&mut section, "job_lease", job_lease);
    put(&mut section, "audit_key", audit_key);
    put(
        &mut section,
        "allow_embedded_command",
        allow_embedded_command,
    );
    put(&mut section, "header_read_timeout", header_read_timeout);
    put(&mut section, "body_read_timeout", body_read_timeout);
    put(&mut section, "max_connections", max_connections);
    section
}

fn user_section(user: &UserConfig) -> Table {
    let UserConfig { email, groups } = user;
    let mut section = Table::new();
    put(&mut section, "email", email);
    put(&mut section, "groups", groups);
    section
}

fn connection_section(connection: &ConnectionConfig) -> Table {
    let ConnectionConfig {
        name,
        kind,
        target,
        agent,
        policy,
        pickup_timeout,
        slack_channel,
    } = connection;
    // The target repeats the connection's type.
    let ConnectionTarget {
        kind: _,
        url,
        command,
        statement_timeout,
        max_rows,
        max_output_bytes,
        env,
    } = target;
    let mut section = Table::new();
    put(&mut section, "name", name);
    put(&mut section, "type", kind);
    put(&mut section, "url", &url.as_ref().map(SecretUrl));
    put(&mut section, "command", command);
    put(&mut section, "agent", agent);
    put(&mut section, "pickup_timeout", pickup_timeout);
    put(&mut section, "statement_timeout", statement_timeout);
    put(&mut section, "max_rows", max_rows);
    put(&mut section, "max_output_bytes", max_output_bytes);
    put(&mut section, "env", &Environment(env));
    put(&mut section, "slack_channel", slack_channel);
    section.insert(
        "access_requests".into(),
        Value::Table(policy_section(policy)),
    );
    section
}

fn policy_section(policy: &Policy) -> Table {
    let Policy {
        enabled,
        approval_groups,
        require_approval_for,
        exempt_groups,
        admin_auto_approve,
        timeout,
    } = policy;
    let mut section = Table::new();
    put(&mut section, "enabled", enabled);
    put(&mut section, "approval_groups", approval_groups);
    put(&mut section, "require_approval_for", require_approval_for);
    put(&mut section, "exempt_groups", exempt_groups);
    put(&mut section, "admin_auto_approve", admin_auto_approve);
    put(&mut section, "timeout", timeout);
    section
}

fn webhook_section(webhook: &WebhookConfig) -> Table {
    let WebhookConfig {
        name,
        url,
        secret,
        events,
        include_command,
        allow_private,
        give_up_after,
        timeout,
    } = webhook;
    let mut section = Table::new();
    put(&mut section, "name", name);
    put(&mut section, "url", url);
    put(&mut section, "secret", secret);
    put(&mut section, "events", events);
    put(&mut section, "include_command", include_command);
    put(&mut section, "allow_private", allow_private);
    put(&mut section, "give_up_after", give_up_after);
    put(&mut section, "timeout", timeout);
    section
}

fn slack_section(slack: &SlackConfig) -> Table {
    let SlackConfig {
        signing_secret,
        bot_token,
        app_token,
        app_id,
        channel,
        api_base_url,
        slash_command,
        link_by_email,
        message_interval,
        give_up_after,
    } = slack;
    let mut section = Table::new();
    put(&mut section, "signing_secret", signing_secret);
    put(&mut section, "bot_token", bot_token);
    put(&mut section, "app_token", app_token);
    put(&mut section, "app_id", app_id);
    put(&mut section, "channel", channel);
    put(&mut section, "api_base_url", api_base_url);
    put(&mut section, "slash_command", slash_command);
    put(&mut section, "link_by_email", link_by_email);
    put(&mut section, "message_interval", message_interval);
    put(&mut section, "give_up_after", give_up_after);
    section
}

fn oidc_section(oidc: &OidcConfig) -> Table {
    let OidcConfig {
        issuer,
        client_id,
        client_secret,
        groups_claim,
        allow_unlisted_users,
        token_ttl,
        scopes,
        name,
    } = oidc;
    let mut section = Table::new();
    put(&mut section, "issuer", issuer);
    put(&mut section, "client_id", client_id);
    put(&mut section, "client_secret", client_secret);
    put(&mut section, "groups_claim", groups_claim);
    put(&mut section, "allow_unlisted_users", allow_unlisted_users);
    put(&mut section, "token_ttl", token_ttl);
    put(&mut section, "scopes", scopes);
    put(&mut section, "name", name);
    section
}

/// Sets `key` when `value` is set (TOML has no null).
fn put(section: &mut Table, key: &str, value: &impl Shown) {
    if let Some(value) = value.shown() {
        section.insert(key.into(), value);
    }
}

fn tables(sections: impl Iterator<Item = Table>) -> Value {
    Value::Array(sections.map(Value::Table).collect())
}

/// How a config value is written; `None` when it is not set.
trait Shown {
    fn shown(&self) -> Option<Value>;
}

impl Shown for SecretString {
    fn shown(&self) -> Option<Value> {
        Some(MASK.into())
    }
}

impl Shown for AuditKey {
    fn shown(&self) -> Option<Value> {
        Some(MASK.into())
    }
}

impl Shown for Secret {
    fn shown(&self) -> Option<Value> {
        Some(MASK.into())
    }
}

/// A secret that is a URL (a database's): shown as a URL with its credentials masked, so an admin
/// still sees which database it is.
struct SecretUrl<'a>(&'a SecretString);

impl Shown for SecretUrl<'_> {
    fn shown(&self) -> Option<Value> {
        match reqwest::Url::parse(self.0.expose_secret()) {
            Ok(url) => url.shown(),
            Err(_) => Some(MASK.into()),
        }
    }
}

impl Shown for reqwest::Url {
    fn shown(&self) -> Option<Value> {
        let mut shown = format!("{}://", self.scheme());
        match (self.username(), self.password()) {
            ("", None) => {}
            (user, Some(_)) => shown.push_str(&format!("{user}:{MASK}@")),
            // A user name alone is often a token (`https://TOKEN@host/`).
            (_, None) => shown.push_str(&format!("{MASK}@")),
        }
        shown.push_str(self.host_str().unwrap_or_default());
        if let Some(port) = self.port() {
            shown.push_str(&format!(":{port}"));
        }
        shown.push_str(self.path());
        if self.query().is_some() {
            let names: Vec<String> = self
                .query_pairs()
                .map(|(name, _)| format!("{name}={MASK}"))
                .collect();
            shown.push('?');
            shown.push_str(&names.join("&"));
        }
        Some(shown.into())
    }
}

/// A program's environment: where its credentials go (`PGPASSWORD`, an API key), so its values
/// are masked and only the names shown.
struct Environment<'a>(&'a BTreeMap<String, String>);

impl Shown for Environment<'_> {
    fn shown(&self) -> Option<Value> {
        let masked: Table = self
            .0
            .keys()
            .map(|name| (name.clone(), Value::from(MASK)))
            .collect();
        (!masked.is_empty()).then_some(Value::Table(masked))
    }
}

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> Option<Value> {
        self.as_ref().and_then(Shown::shown)
    }
}

impl Shown for String {
    fn shown(&self) -> Option<Value> {
        Some(self.as_str().into())
    }
}

impl Shown for bool {
    fn shown(&self) -> Option<Value> {
        Some((*self).into())
    }
}

impl Shown for usize {
    fn shown(&self) -> Option<Value> {
        Some(i64::try_from(*self).unwrap_or(i64::MAX).into())
    }
}

impl Shown for Duration {
    fn shown(&self) -> Option<Value> {
        Some(humantime::format_duration(*self).to_string().into())
    }
}

impl Shown for SocketAddr {
    fn shown(&self) -> Option<Value> {
        Some(self.to_string().into())
    }
}

impl Shown for Email {
    fn shown(&self) -> Option<Value> {
        Some(self.as_str().into())
    }
}

impl Shown for ConnectionName {
    fn shown(&self) -> Option<Value> {
        Some(self.as_str().into())
    }
}

impl Shown for ConnectionType {
    fn shown(&self) -> Option<Value> {
        let name = match self {
            ConnectionType::Postgres => "postgres",
            ConnectionType::Mysql => "mysql",
            ConnectionType::Sqlite => "sqlite",
            ConnectionType::Command => "command",
        };
        Some(name.into())
    }
}

impl Shown for RequireApprovalFor {
    fn shown(&self) -> Option<Value> {
        match self {
            RequireApprovalFor::All => Some("all".into()),
            RequireApprovalFor::Groups(groups) => groups.shown(),
        }
    }
}

impl Shown for Vec<String> {
    fn shown(&self) -> Option<Value> {
        Some(Value::Array(
            self.iter().map(|s| s.as_str().into()).collect(),
        ))
    }
}

impl Shown for BTreeSet<String> {
    fn shown(&self) -> Option<Value> {
        Some(Value::Array(
            self.iter().map(|s| s.as_str().into()).collect(),
        ))
    }
}

impl Shown for BTreeSet<Event> {
    fn shown(&self) -> Option<Value> {
        Some(Value::Array(
            self.iter().map(|e| e.as_str().into()).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configured_secret_is_shown() {
        let secrets = [
            "audit-key-0123456789abcdef0123456789abcdef",
            "db-pass-1",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "hook-query-2",
            "slack-signing-3",
            "xoxb-bot-4",
            "xapp-app-5",
            "env-secret-6",
            "conn-pass-7",
            "oidc-client-secret-8",
        ];
        let text = format!(
            r#"
[server]
database_url = "postgres://hoop:{}@db.internal/hoop"
audit_key = "{}"
allow_embedded_command = true
[[users]]
email = "root@x.com"
groups = ["admin"]
[[connections]]
name = "jobs"
type = "command"
command = ["/usr/local/bin/job"]
env = {{ API_KEY = "{}" }}
[[connections]]
name = "warehouse"
type = "postgres"
url = "postgres://reader:{}@warehouse/dw"
[[webhooks]]
name = "siem"
url = "https://siem.example/in?token={}"
secret = "whsec_{}"
[slack]
signing_secret = "{}"
bot_token = "{}"
app_token = "{}"
channel = "C0123456789"
[oidc]
issuer = "https://login.example"
client_id = "hoopbot"
client_secret = "{}"
"#,
            secrets[1],
            secrets[0],
            secrets[7],
            secrets[8],
            secrets[3],
            secrets[2],
            secrets[4],
            secrets[5],
            secrets[6],
            secrets[9],
        );
        let shown = Config::parse(&text, "test").unwrap().shown();
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        for masked in [
            "audit_key = \"••••••\"",
            "database_url = \"postgres://hoop:••••••@db.internal/hoop\"",
            "API_KEY = \"••••••\"",
            "app_token = \"••••••\"",
            "client_secret = \"••••••\"",
        ] {
            assert!(shown.contains(masked), "{masked}:\n{shown}");
        }
    }

    #[test]
    fn urls_keep_where_they_point_and_lose_their_credentials() {
        let cases = [
            (
                "postgres://hoop:hunter2@db.internal:5432/hoop?sslmode=require&password=x",
                "postgres://hoop:••••••@db.internal:5432/hoop?sslmode=••••••&password=••••••",
            ),
            (
                "https://ghp_token@hooks.example/in",
                "https://••••••@hooks.example/in",
            ),
            ("sqlite://hoop.db", "sqlite://hoop.db"),
        ];
        for (url, shown) in cases {
            let url = reqwest::Url::parse(url).unwrap();
            assert_eq!(url.shown(), Some(Value::from(shown)));
        }
        let unparsable = SecretString::from("not a url with hunter2");
        assert_eq!(SecretUrl(&unparsable).shown(), Some(Value::from(MASK)));
    }
}
