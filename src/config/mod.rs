//! The TOML configuration: server settings, users and their groups, connections and their policies.
//!
//! Loading is strict: unknown keys, unknown groups, duplicate names and bad durations are errors that
//! name the key and the line, so a typo never silently weakens a policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::audit::AuditKey;
use crate::domain::{Admission, ConnectionName, Email, Event, Identity, Policy, admit};

mod oidc;
mod raw;
mod shown;
mod slack;
pub mod sqlite_file;
mod validate;

pub use oidc::{DEFAULT_TOKEN_TTL, OidcConfig};
pub use shown::MASK;
pub use slack::SlackConfig;

use validate::Validator;

/// Commands larger than this are refused unless `server.max_command_bytes` says otherwise.
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 1024 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_JOB_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_ROWS: usize = 10_000;
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
/// How long an approved job waits for its agent before it fails as never picked up.
pub const DEFAULT_PICKUP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The largest `server.max_command_bytes`: the body limit is a multiple of it, so it must stay sane.
pub const MAX_MAX_COMMAND_BYTES: usize = 64 * 1024 * 1024;
/// The longest approval timeout or statement timeout: beyond it a deadline means nothing, and far
/// beyond it the arithmetic on milliseconds overflows. A year as humantime counts it (365.25 days),
/// so errors can say "1year".
pub const MAX_TIMEOUT: Duration = Duration::from_secs(31_557_600);
/// The longest `server.job_lease`: a lost agent's job must not stay `running` for days.
pub const MAX_JOB_LEASE: Duration = Duration::from_secs(60 * 60);
/// The largest `max_rows` a connection may set.
pub const MAX_MAX_ROWS: usize = 10_000_000;
/// The largest `max_output_bytes` a connection may set.
pub const MAX_MAX_OUTPUT_BYTES: usize = 1024 * 1024 * 1024;
/// How long a client may take to send a request's headers (and how long an idle keep-alive
/// connection stays open).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body, once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest read timeout: a client slower than this is not worth a connection.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Connections served at once; further ones wait in the listen backlog. Leaves room for the
/// 10,000 long-polling waiters hoopbot is built to hold.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// The most connections `max_connections` may allow (each costs a file descriptor).
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Agent name for connections run inside `hoop serve` itself.
pub const EMBEDDED_AGENT: &str = "embedded";

/// How long a webhook delivery is retried before it is given up, unless `give_up_after` says.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest `give_up_after`.
pub const MAX_GIVE_UP_AFTER: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long a webhook receiver may take to answer, unless `timeout` says.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest webhook `timeout`: a delivery holds its claim for this long.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub users: Vec<UserConfig>,
    pub connections: Vec<ConnectionConfig>,
    pub webhooks: Vec<WebhookConfig>,
    pub slack: Option<SlackConfig>,
    pub oidc: Option<OidcConfig>,
}

/// A `[[webhooks]]` endpoint: every event it subscribes to is POSTed to it, signed.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub name: String,
    /// Checked to be http(s); where it resolves is checked at each delivery.
    pub url: reqwest::Url,
    pub secret: crate::webhook::signature::Secret,
    /// The event types it receives (`access_request.approved`, …).
    pub events: BTreeSet<Event>,
    /// Whether `data` carries the command itself, or only its SHA-256 and length.
    pub include_command: bool,
    /// Whether its URL may resolve to loopback, link-local or private addresses.
    pub allow_private: bool,
    /// How long a delivery is retried before it is given up.
    pub give_up_after: Duration,
    /// How long the receiver may take to answer one attempt.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    /// May hold a password: a secret, so a `Debug` print of the config cannot show it.
    pub database_url: SecretString,
    pub admin_group: String,
    pub max_command_bytes: usize,
    /// How long an agent's claim on a job holds without a heartbeat.
    pub job_lease: Duration,
    /// The audit chain's HMAC key (`audit_key`, or `HOOP_AUDIT_KEY`). `hoop serve` refuses to
    /// start without one.
    pub audit_key: Option<AuditKey>,
    /// Whether `type = "command"` connections may run inside the server, as its own user.
    pub allow_embedded_command: bool,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// An approval group of a connection with one member, whose own requests there wait for that
/// group and so can only expire (see [`Config::lone_approvers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoneApprover {
    pub connection: String,
    pub group: String,
    pub member: String,
}

impl std::fmt::Display for LoneApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "on connection {}, {} is the only member of approval group {}: their own requests \
             there wait for {} and can never be approved, only expire; add another member to {}",
            self.connection, self.member, self.group, self.group, self.group
        )
    }
}

#[derive(Debug, Clone)]
pub struct UserConfig {
    pub email: Email,
    pub groups: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    Postgres,
    Mysql,
    Sqlite,
    Command,
}

#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: ConnectionName,
    pub kind: ConnectionType,
    pub target: ConnectionTarget,
    /// Which agent runs this connection's commands: `embedded` or an agent's name.
    pub agent: Option<String>,
    pub policy: Policy,
    /// How long an approved job waits for an agent to start it; after that it fails ("no agent
    /// picked it up") instead of running whenever an agent turns up.
    pub pickup_timeout: Duration,
    /// The Slack channel its request cards go to, instead of `slack.channel`.
    pub slack_channel: Option<String>,
}

/// How to reach a connection and the limits of one execution. Lives in the server's config for
/// embedded connections and in the agent's config otherwise.
#[derive(Debug, Clone)]
pub struct ConnectionTarget {
    pub kind: ConnectionType,
    /// May hold a password: a secret, so a `Debug` print cannot show it.
    pub url: Option<SecretString>,
    pub command: Option<Vec<String>>,
    pub statement_timeout: Option<Duration>,
    pub max_rows: usize,
    pub max_output_bytes: usize,
    /// The whole environment of a `command` connection's program (besides a default `PATH`):
    /// it never inherits the server's or agent's own, which holds their secrets.
    pub env: BTreeMap<String, String>,
}

/// A configuration error, located in its file where possible.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read config file: {e}"),
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.apply_env_overrides()?;
        Ok(config)
    }

    /// Parses config text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse_with(text, origin, |v, raw| v.validate(raw))
    }

    /// `HOOP_DATABASE_URL`, `HOOP_LISTEN`, `HOOP_PUBLIC_URL` and `HOOP_AUDIT_KEY` win over the
    /// file, so a deployment can keep secrets and addresses out of it.
    pub fn apply_env_overrides(&mut self) -> Result<(), ConfigError> {
        if let Ok(url) = std::env::var("HOOP_DATABASE_URL") {
            self.server.database_url = url.into();
        }
        if let Ok(listen) = std::env::var("HOOP_LISTEN")
            && let Ok(addr) = listen.parse()
        {
            self.server.listen = addr;
        }
        if let Ok(url) = std::env::var("HOOP_PUBLIC_URL") {
            self.server.public_url = url.trim_end_matches('/').to_string();
        }
        if let Ok(key) = std::env::var("HOOP_AUDIT_KEY") {
            self.server.audit_key = Some(AuditKey::new(&key).map_err(|message| ConfigError {
                location: "HOOP_AUDIT_KEY".into(),
                message,
            })?);
        }
        Ok(())
    }

    /// Embedded `command` connections: they run as the server's own user.
    pub fn embedded_commands(&self) -> impl Iterator<Item = &ConnectionConfig> {
        self.connections.iter().filter(|c| {
            c.kind == ConnectionType::Command && c.agent.as_deref() == Some(EMBEDDED_AGENT)
        })
    }

    /// Approval groups whose one member's own requests on the connection can never be approved:
    /// the policy holds them, and nobody else may approve for the group, so they can only expire.
    pub fn lone_approvers(&self) -> Vec<LoneApprover> {
        let mut found = Vec::new();
        for conn in self.connections.iter().filter(|c| c.policy.enabled) {
            for group in &conn.policy.approval_groups {
                let members: Vec<&UserConfig> = self
                    .users
                    .iter()
                    .filter(|u| u.groups.contains(group))
                    .collect();
                let [only] = members[..] else { continue };
                let requester = Identity {
                    email: only.email.clone(),
                    is_admin: only.groups.contains(&self.server.admin_group),
                    groups: only.groups.clone(),
                };
                if matches!(admit(&conn.policy, &requester), Admission::Hold { .. }) {
                    found.push(LoneApprover {
                        connection: conn.name.to_string(),
                        group: group.clone(),
                        member: only.email.to_string(),
                    });
                }
            }
        }
        found
    }

    /// The user with `email` (ignoring ASCII case).
    pub fn user(&self, email: &Email) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.email == *email)
    }

    pub fn connection(&self, name: &ConnectionName) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == *name)
    }

    /// The Slack channel for `connection`'s request cards: its own, or the default.
    pub fn slack_channel(&self, connection: &str) -> Option<&str> {
        let slack = self.slack.as_ref()?;
        let own = self
            .connections
            .iter()
            .find(|c| c.name.as_str() == connection);
        Some(
            own.and_then(|c| c.slack_channel.as_deref())
                .unwrap_or(&slack.channel),
        )
    }

    pub fn webhook(&self, name: &str) -> Option<&WebhookConfig> {
        self.webhooks.iter().find(|w| w.name == name)
    }

    /// The config file to use when none is given: `hoop.toml` in the working directory, if present.
    pub fn default_path() -> Option<PathBuf> {
        let path = PathBuf::from("hoop.toml");
        path.exists().then_some(path)
    }
}

/// The connection agent's config: where the server is, its token, and the connections it runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    pub token: SecretString,
    pub connections: Vec<(ConnectionName, ConnectionTarget)>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read agent config file: {e}"),
        })?;
        AgentConfig::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<AgentConfig, ConfigError> {
        parse_with(text, origin, |v, raw| v.agent(raw))
    }
}

/// Substitutes `${ENV}`, parses the TOML into `Raw`, and validates it with `validate`.
fn parse_with<Raw: serde::de::DeserializeOwned, T>(
    text: &str,
    origin: &str,
    validate: impl FnOnce(&Validator<'_>, Raw) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let text = substitute_env(text, origin)?;
    let raw: Raw = toml::from_str(&text).map_err(|e| ConfigError {
        location: match e.span() {
            Some(span) => format!("{origin}:{}", line_of(&text, span.start)),
            None => origin.to_string(),
        },
        message: e.message().to_string(),
    })?;
    validate(
        &Validator {
            text: &text,
            origin,
        },
        raw,
    )
}

impl ConnectionTarget {
    /// Whether this target has what its type needs to run a command.
    pub fn check(&self) -> Result<(), String> {
        match self.kind {
            ConnectionType::Command if self.command.is_none() => {
                Err("a command connection needs `command`, e.g. [\"bash\"]".into())
            }
            ConnectionType::Postgres | ConnectionType::Mysql | ConnectionType::Sqlite
                if self.url.is_none() =>
            {
                Err("this connection needs a `url` to run commands".into())
            }
            _ => Ok(()),
        }
    }
}

/// Replaces `${NAME}` with the environment variable `NAME`, so secrets stay out of the file.
/// Comment lines are left alone, so they can mention the syntax.
fn substitute_env(text: &str, origin: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let Some(end) = rest[start..].find('}') else {
                break;
            };
            let name = &rest[start + 2..start + end];
            let value = std::env::var(name).map_err(|_| ConfigError {
                location: format!("{origin}:{}", index + 1),
                message: format!(
                    "environment variable {name} is not set (referenced as ${{{name}}})"
                ),
            })?;
            out.push_str(&rest[..start]);
            out.push_str(&value);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RequireApprovalFor;
    use secrecy::ExposeSecret;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8009"

[[users]]
email = "bob@x.com"
groups = ["dba-team"]

[[users]]
email = "sam@x.com"
groups = ["security"]
"#;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{BASE}{extra}"), "hoop.toml")
    }

    #[test]
    fn a_group_whose_only_member_needs_it_is_found() {
        let config = parse(
            "[[users]]\nemail = \"olga@x.com\"\ngroups = [\"oncall\"]\n\
             [[connections]]\nname = \"prod-db\"\ntype = \"postgres\"\n\
             [connections.access_requests]\napproval_groups = [\"security\", \"oncall\"]\n\
             exempt_groups = [\"oncall\"]\n",
        )
        .unwrap();
        // Sam's requests wait for security, which only Sam is in; Olga is exempt, so hers run.
        let found = config.lone_approvers();
        assert_eq!(
            found,
            [LoneApprover {
                connection: "prod-db".into(),
                group: "security".into(),
                member: "sam@x.com".into(),
            }]
        );
        assert!(
            found[0]
                .to_string()
                .contains("add another member to security")
        );
    }

    #[test]
    fn admins_can_be_reviewed_like_anyone() {
        let config = parse(
            "[[connections]]\nname = \"prod-db\"\ntype = \"postgres\"\n\
             [connections.access_requests]\napproval_groups = [\"dba-team\"]\n\
             admin_auto_approve = false\n",
        )
        .unwrap();
        let conn = config.connection(&"prod-db".parse().unwrap()).unwrap();
        assert!(!conn.policy.admin_auto_approve);
        let typo = parse(
            "[[connections]]\nname = \"prod-db\"\ntype = \"postgres\"\n\
             [connections.access_requests]\napproval_groups = [\"dba-team\"]\n\
             admin_auto_approve = \"no\"\n",
        );
        assert!(typo.is_err(), "a string is not a switch");
    }

    #[test]
    fn a_full_connection_parses() {
        let config = parse(
            r#"
[[connections]]
name = "prod-db"
type = "postgres"

[connections.access_requests]
approval_groups = ["dba-team", "security"]
require_approval_for = ["dba-team"]
timeout = "5m"
"#,
        )
        .unwrap();
        let conn = config.connection(&"prod-db".parse().unwrap()).unwrap();
        assert!(conn.policy.enabled);
        assert_eq!(conn.policy.approval_groups, ["dba-team", "security"]);
        assert_eq!(
            conn.policy.require_approval_for,
            RequireApprovalFor::Groups(vec!["dba-team".into()])
        );
        assert_eq!(conn.policy.timeout, Duration::from_secs(300));
        assert!(
            conn.policy.admin_auto_approve,
            "admins auto-approve by default"
        );
        assert_eq!(conn.agent, None);
        assert_eq!(conn.pickup_timeout, DEFAULT_PICKUP_TIMEOUT);
        assert_eq!(config.server.public_url, "http://127.0.0.1:8009");
    }

    #[test]
    fn pickup_timeout_is_a_duration_per_connection() {
        let config = parse(
            "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nagent = \"edge\"\npickup_timeout = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(
            config
                .connection(&"db".parse().unwrap())
                .unwrap()
                .pickup_timeout,
            Duration::from_secs(90)
        );
        for (value, message) in [
            (
                "\"soon\"",
                "hoop.toml:16: connections[0].pickup_timeout: \"soon\" is not a duration",
            ),
            (
                "\"0s\"",
                "hoop.toml:16: connections[0].pickup_timeout: must be longer than zero",
            ),
        ] {
            let err = parse(&format!(
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nagent = \"edge\"\npickup_timeout = {value}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(message), "{err}");
        }
    }

    #[test]
    fn users_are_email_addresses_matched_ignoring_case() {
        let text = |email: &str| {
            format!(
                "[server]\ndatabase_url = \"sqlite://x.db\"\n[[users]]\nemail = \"{email}\"\ngroups = []\n"
            )
        };
        let err = Config::parse(&text("alice"), "hoop.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "hoop.toml:4: users[0].email: \"alice\" is not an email address"
        );
        let config = Config::parse(&text(" Alice@X.com "), "hoop.toml").unwrap();
        let user = config.user(&"alice@x.com".parse().unwrap()).unwrap();
        assert_eq!(user.email.as_str(), "Alice@X.com");
    }

    #[test]
    fn an_agent_config_names_its_connections_as_the_server_does() {
        let err = AgentConfig::parse(
            "[agent]\nserver_url = \"http://h\"\ntoken = \"t\"\n[[connections]]\nname = \"my db\"\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\n",
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "agent.toml:5: connections[0].name: \"my db\" is not a connection name: use letters, digits, '-', '_' or '.'"
        );
    }

    #[test]
    fn an_agent_config_cannot_set_the_pickup_timeout() {
        // The server decides how long a job waits for its agent.
        let err = AgentConfig::parse(
            "[agent]\nserver_url = \"http://h\"\ntoken = \"t\"\n[[connections]]\nname = \"db\"\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\npickup_timeout = \"5m\"\n",
            "agent.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("agent.toml:5: connections[0]: access_requests, agent and pickup_timeout belong in the server's config"),
            "{err}"
        );
    }

    #[test]
    fn webhooks_parse_with_defaults_and_refuse_what_would_never_deliver() {
        let hook = |lines: &str| {
            format!(
                "[[webhooks]]\nname = \"siem\"\nurl = \"https://hooks.company.com/hoop?t=1\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n{lines}"
            )
        };
        let config = parse(&hook("")).unwrap();
        let siem = config.webhook("siem").unwrap();
        assert_eq!(siem.events.len(), Event::ALL.len());
        assert!(siem.include_command && !siem.allow_private);
        assert_eq!(
            (siem.give_up_after, siem.timeout),
            (DEFAULT_GIVE_UP_AFTER, DEFAULT_WEBHOOK_TIMEOUT)
        );
        let some = parse(&hook(
            "events = [\"access_request.approved\"]\ninclude_command = false\ngive_up_after = \"2h\"\n",
        ))
        .unwrap();
        let some = some.webhook("siem").unwrap();
        assert_eq!(some.events.iter().collect::<Vec<_>>(), [&Event::Approved]);
        assert!(!some.include_command);
        assert_eq!(some.give_up_after, Duration::from_secs(7200));

        for (lines, message) in [
            (
                "events = [\"access_request.aproved\"]\n",
                "hoop.toml:16: webhooks[0].events: \"access_request.aproved\" is not an event type",
            ),
            (
                "give_up_after = \"90days\"\n",
                "hoop.toml:16: webhooks[0].give_up_after: \"90days\" is too long",
            ),
            ("colour = \"red\"\n", "hoop.toml:16: unknown field `colour`"),
        ] {
            let err = parse(&hook(lines)).unwrap_err().to_string();
            assert!(err.starts_with(message), "{err}");
        }
        let bad_url = parse(&hook("").replace(
            "https://hooks.company.com/hoop?t=1",
            "ftp://x/y?token=s3cret",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad_url
                .starts_with("hoop.toml:14: webhooks[0].url: must be an http:// or https:// URL"),
            "{bad_url}"
        );
        assert!(
            !bad_url.contains("s3cret"),
            "the URL may hold a token: {bad_url}"
        );
        let bad_secret =
            parse(&hook("").replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_tooshort"))
                .unwrap_err()
                .to_string();
        assert!(
            bad_secret
                .starts_with("hoop.toml:15: webhooks[0].secret: webhook secret must be whsec_"),
            "{bad_secret}"
        );
        assert!(!bad_secret.contains("tooshort"), "{bad_secret}");
        let twice = parse(&(hook("") + &hook(""))).unwrap_err().to_string();
        assert!(
            twice.starts_with("hoop.toml:17: webhooks[1].name: duplicate webhook siem"),
            "{twice}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let cases = [
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[connections.access_requests]\napproval_groups = [\"dba-tem\"]\n",
                "hoop.toml:16: connections[0].access_requests.approval_groups: unknown group \"dba-tem\"",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[[connections]]\nname = \"db\"\ntype = \"mysql\"\n",
                "hoop.toml:16: connections[1].name: duplicate connection db",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[connections.access_requests]\napproval_groups = [\"security\"]\ntimeout = \"soon\"\n",
                "hoop.toml:17: connections[0].access_requests.timeout: \"soon\" is not a duration",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"oracle\"\n",
                "hoop.toml:14: unknown variant `oracle`",
            ),
            (
                "[[connections]]\nname = \"prod db\"\ntype = \"postgres\"\n",
                "hoop.toml:13: connections[0].name: \"prod db\" is not a connection name: use letters, digits, '-', '_' or '.'",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\npassword = \"x\"\n",
                "hoop.toml:15: unknown field `password`",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[connections.access_requests]\napproval_groups = []\n",
                "hoop.toml:16: connections[0].access_requests.approval_groups: access requests are enabled but no approval group",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"command\"\nagent = \"embedded\"\n",
                "hoop.toml:13: connections[0]: a command connection needs `command`",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"command\"\n",
                "hoop.toml:13: connections[0]: a command connection needs `command` (run by `hoop serve`) or `agent`",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nagent = \"edge\"\nurl = \"postgres://db/x\"\n",
                "hoop.toml:13: connections[0]: agent \"edge\" runs this connection with the `url`/`command` of its own agent config",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"command\"\nagent = \"edge\"\ncommand = [\"bash\"]\n",
                "hoop.toml:13: connections[0]: agent \"edge\" runs this connection",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[connections.access_requests]\napproval_groups = [\"security\"]\ntimeout = \"300000y\"\n",
                "hoop.toml:17: connections[0].access_requests.timeout: \"300000y\" is too long (at most 1year)",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nstatement_timeout = \"2years\"\n",
                "hoop.toml:15: connections[0].statement_timeout: \"2years\" is too long",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\nmax_rows = 0\n",
                "hoop.toml:15: connections[0].max_rows: must be at least 1",
            ),
            (
                "[[connections]]\nname = \"db\"\ntype = \"postgres\"\n\nmax_output_bytes = 99999999999\n",
                "hoop.toml:16: connections[0].max_output_bytes: 99999999999 is too large (at most 1073741824)",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(extra).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "expected {expected:?}, got {err:?}"
            );
        }
    }

    #[test]
    fn a_command_connection_inside_the_server_must_be_allowed_explicitly() {
        let shell = "[[connections]]\nname = \"box\"\ntype = \"command\"\ncommand = [\"bash\"]\n";
        let err = parse(shell).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "hoop.toml:13: connections[0]: a command connection run by the server itself"
            ),
            "{err}"
        );
        assert!(err.contains("allow_embedded_command = true"), "{err}");

        let allowed = BASE.replace("[server]\n", "[server]\nallow_embedded_command = true\n");
        let config = Config::parse(&format!("{allowed}{shell}"), "hoop.toml").unwrap();
        let names: Vec<&str> = config
            .embedded_commands()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["box"]);

        // On a remote agent it needs no permission: it runs there, not as the server.
        let remote = "[[connections]]\nname = \"box\"\ntype = \"command\"\nagent = \"edge\"\n";
        assert_eq!(parse(remote).unwrap().embedded_commands().count(), 0);
    }

    #[test]
    fn the_audit_key_is_checked_and_never_printed() {
        let short = BASE.replace("[server]\n", "[server]\naudit_key = \"hunter2\"\n");
        let err = Config::parse(&short, "hoop.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("hoop.toml:3: server.audit_key: must be at least 32 characters"),
            "{err}"
        );
        let key = "k".repeat(40);
        let good = BASE.replace("[server]\n", &format!("[server]\naudit_key = \"{key}\"\n"));
        let config = Config::parse(&good, "hoop.toml").unwrap();
        assert!(config.server.audit_key.is_some());
        assert!(
            !format!("{config:?}").contains(&key),
            "a Debug print leaks the key"
        );
    }

    #[test]
    fn only_command_connections_take_an_environment() {
        let err = parse("[[connections]]\nname = \"db\"\ntype = \"postgres\"\nagent = \"edge\"\nenv = { PGPASSWORD = \"x\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("hoop.toml:13: connections[0].env: only command connections"),
            "{err}"
        );
    }

    #[test]
    fn server_limits_out_of_range_name_the_key_and_the_line() {
        let server = |line: &str| {
            Config::parse(&format!("[server]\n\n{line}\n"), "hoop.toml")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            server("max_command_bytes = 0"),
            "hoop.toml:3: server.max_command_bytes: must be at least 1"
        );
        assert_eq!(
            server("max_command_bytes = 9223372036854775807"),
            "hoop.toml:3: server.max_command_bytes: 9223372036854775807 is too large (at most 67108864)"
        );
        assert_eq!(
            server("job_lease = \"2h\""),
            "hoop.toml:3: server.job_lease: \"2h\" is too long (at most 1h)"
        );
        let at_the_bounds = Config::parse(
            "[server]\nmax_command_bytes = 67108864\njob_lease = \"1h\"\n",
            "hoop.toml",
        )
        .unwrap();
        assert_eq!(
            at_the_bounds.server.max_command_bytes,
            MAX_MAX_COMMAND_BYTES
        );
        assert_eq!(at_the_bounds.server.job_lease, MAX_JOB_LEASE);
    }

    #[test]
    fn read_timeouts_and_the_connection_cap_are_set_and_bounded() {
        let config = Config::parse(
            "[server]\nheader_read_timeout = \"5s\"\nbody_read_timeout = \"1m\"\nmax_connections = 20000\n",
            "hoop.toml",
        )
        .unwrap();
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.server.body_read_timeout, Duration::from_secs(60));
        assert_eq!(config.server.max_connections, 20_000);
        let defaults = Config::parse("[server]\n", "hoop.toml").unwrap();
        assert_eq!(
            (
                defaults.server.header_read_timeout,
                defaults.server.body_read_timeout,
                defaults.server.max_connections
            ),
            (
                DEFAULT_HEADER_READ_TIMEOUT,
                DEFAULT_BODY_READ_TIMEOUT,
                DEFAULT_MAX_CONNECTIONS
            )
        );
        for (line, expected) in [
            (
                "header_read_timeout = \"1h\"",
                "hoop.toml:3: server.header_read_timeout: \"1h\" is too long (at most 10m)",
            ),
            (
                "max_connections = 0",
                "hoop.toml:3: server.max_connections: must be at least 1",
            ),
        ] {
            let err = Config::parse(&format!("[server]\n\n{line}\n"), "hoop.toml")
                .unwrap_err()
                .to_string();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn debug_prints_show_no_secrets() {
        let config = Config::parse(
            "[server]\ndatabase_url = \"postgres://hoop:db-s3cret@db/hoop\"\n[[connections]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://app:target-s3cret@db/app\"\n",
            "hoop.toml",
        )
        .unwrap();
        let agent = AgentConfig::parse(
            "[agent]\nserver_url = \"http://hoop\"\ntoken = \"hoop_agent-s3cret\"\n[[connections]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://app:edge-s3cret@db/app\"\n",
            "agent.toml",
        )
        .unwrap();
        let printed = format!("{config:?} {agent:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert_eq!(agent.token.expose_secret(), "hoop_agent-s3cret");
    }

    #[test]
    fn environment_variables_fill_placeholders() {
        // SAFETY: the variable name is unique to this test, so no other test reads or writes it.
        unsafe { std::env::set_var("HOOP_TEST_CONFIG_DB_URL", "postgres://db.internal/hoop") };
        let config = Config::parse(
            "[server]\ndatabase_url = \"${HOOP_TEST_CONFIG_DB_URL}\"\n",
            "hoop.toml",
        )
        .unwrap();
        assert_eq!(
            config.server.database_url.expose_secret(),
            "postgres://db.internal/hoop"
        );
        let err = Config::parse(
            "[server]\n\ndatabase_url = \"${HOOP_TEST_UNSET_VAR}\"\n",
            "hoop.toml",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hoop.toml:3: environment variable HOOP_TEST_UNSET_VAR is not set (referenced as ${HOOP_TEST_UNSET_VAR})"
        );
    }
}
