//! Validation: every key of the raw configuration checked, with errors that name the key and the
//! line.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use toml::Spanned;

use super::raw::*;
use super::*;
use crate::audit::AuditKey;
use crate::domain::{ConnectionName, Email, Policy, RequireApprovalFor};

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Validator<'_> {
    pub(super) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: String,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            location: format!("{}:{}", self.origin, line_of(self.text, span.start)),
            message: format!("{key}: {message}"),
        })
    }

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = self.server(raw.server)?;
        let users = self.users(&raw.users)?;
        // The groups a policy may name: every user's, and the admins'.
        let known: BTreeSet<String> = users
            .iter()
            .flat_map(|u| u.groups.iter().cloned())
            .chain([server.admin_group.clone()])
            .collect();
        // Where connections name a Slack channel, so one set without [slack] is an error.
        let raw_slack_channels: Vec<(String, std::ops::Range<usize>)> = raw
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                Some((
                    format!("connections[{i}]"),
                    c.slack_channel.as_ref()?.span(),
                ))
            })
            .collect();
        let connections = self.connections(raw.connections, &server, &known)?;
        let webhooks = self.webhooks(raw.webhooks)?;
        let slack = raw.slack.map(|s| self.slack(s)).transpose()?;
        let oidc = raw.oidc.map(|o| self.oidc(o)).transpose()?;
        if slack.is_none()
            && let Some(conn) = raw_slack_channels.first()
        {
            return self.err(
                conn.1.clone(),
                &format!("{}.slack_channel", conn.0),
                "is set but there is no [slack] section to post with".into(),
            );
        }
        Ok(Config {
            server,
            users,
            connections,
            webhooks,
            slack,
            oidc,
        })
    }

    /// `[[webhooks]]`: each named once, an http(s) URL, a Standard Webhooks secret, and events
    /// that exist.
    fn webhooks(&self, raw: Vec<RawWebhook>) -> Result<Vec<WebhookConfig>, ConfigError> {
        let mut webhooks: Vec<WebhookConfig> = Vec::new();
        for (i, hook) in raw.into_iter().enumerate() {
            let key = format!("webhooks[{i}]");
            let name = hook.name.get_ref().trim().to_string();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return self.err(
                    hook.name.span(),
                    &format!("{key}.name"),
                    format!("{name:?} must be letters, digits, '-', '_' or '.'"),
                );
            }
            if webhooks.iter().any(|w| w.name == name) {
                return self.err(
                    hook.name.span(),
                    &format!("{key}.name"),
                    format!("duplicate webhook {name}"),
                );
            }
            let url = match reqwest::Url::parse(hook.url.get_ref().trim()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
                // Not the URL itself: it may carry a token.
                _ => {
                    return self.err(
                        hook.url.span(),
                        &format!("{key}.url"),
                        "must be an http:// or https:// URL with a host".into(),
                    );
                }
            };
            let secret = hook.secret.get_ref().parse().or_else(|message| {
                self.err(hook.secret.span(), &format!("{key}.secret"), message)
            })?;
            let events = match &hook.events {
                None => Event::ALL.into_iter().collect(),
                Some(events) => Event::subscribed(events.get_ref()).or_else(|message| {
                    self.err(events.span(), &format!("{key}.events"), message)
                })?,
            };
            webhooks.push(WebhookConfig {
                name,
                url,
                secret,
                events,
                include_command: hook.include_command,
                allow_private: hook.allow_private,
                give_up_after: match &hook.give_up_after {
                    Some(t) => {
                        self.duration(t, &format!("{key}.give_up_after"), MAX_GIVE_UP_AFTER)?
                    }
                    None => DEFAULT_GIVE_UP_AFTER,
                },
                timeout: match &hook.timeout {
                    Some(t) => self.duration(t, &format!("{key}.timeout"), MAX_WEBHOOK_TIMEOUT)?,
                    None => DEFAULT_WEBHOOK_TIMEOUT,
                },
            });
        }
        Ok(webhooks)
    }

    /// `[server]`.
    fn server(&self, raw: RawServer) -> Result<ServerConfig, ConfigError> {
        let listen: SocketAddr = match raw.listen.get_ref().parse() {
            Ok(addr) => addr,
            Err(_) => {
                return self.err(
                    raw.listen.span(),
                    "server.listen",
                    format!(
                        "{:?} is not an address like 127.0.0.1:8009",
                        raw.listen.get_ref()
                    ),
                );
            }
        };
        let public_url = raw
            .public_url
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        Ok(ServerConfig {
            listen,
            public_url,
            database_url: raw.database_url.into(),
            admin_group: raw.admin_group,
            max_command_bytes: match &raw.max_command_bytes {
                Some(bytes) => {
                    self.size(bytes, "server.max_command_bytes", MAX_MAX_COMMAND_BYTES)?
                }
                None => DEFAULT_MAX_COMMAND_BYTES,
            },
            job_lease: match &raw.job_lease {
                Some(lease) => self.duration(lease, "server.job_lease", MAX_JOB_LEASE)?,
                None => DEFAULT_JOB_LEASE,
            },
            audit_key: match &raw.audit_key {
                Some(key) => Some(
                    AuditKey::new(key.get_ref())
                        .or_else(|message| self.err(key.span(), "server.audit_key", message))?,
                ),
                None => None,
            },
            allow_embedded_command: raw.allow_embedded_command,
            header_read_timeout: match &raw.header_read_timeout {
                Some(t) => self.duration(t, "server.header_read_timeout", MAX_READ_TIMEOUT)?,
                None => DEFAULT_HEADER_READ_TIMEOUT,
            },
            body_read_timeout: match &raw.body_read_timeout {
                Some(t) => self.duration(t, "server.body_read_timeout", MAX_READ_TIMEOUT)?,
                None => DEFAULT_BODY_READ_TIMEOUT,
            },
            max_connections: match &raw.max_connections {
                Some(n) => self.size(n, "server.max_connections", MAX_MAX_CONNECTIONS)?,
                None => DEFAULT_MAX_CONNECTIONS,
            },
        })
    }

    /// `[[users]]`: each an email, once.
    fn users(&self, raw: &[RawUser]) -> Result<Vec<UserConfig>, ConfigError> {
        let mut users: Vec<UserConfig> = Vec::new();
        for (i, user) in raw.iter().enumerate() {
            let email = Email::parse(user.email.get_ref()).or_else(|message| {
                self.err(
                    user.email.span(),
                    &format!("users[{i}].email"),
                    message.to_string(),
                )
            })?;
            if users.iter().any(|u| u.email == email) {
                return self.err(
                    user.email.span(),
                    &format!("users[{i}].email"),
                    format!("duplicate user {email}"),
                );
            }
            users.push(UserConfig {
                email,
                groups: user.groups.iter().cloned().collect(),
            });
        }
        Ok(users)
    }

    /// `[[connections]]`, whose policies may name only `known` groups.
    fn connections(
        &self,
        raw: Vec<RawConnection>,
        server: &ServerConfig,
        known: &BTreeSet<String>,
    ) -> Result<Vec<ConnectionConfig>, ConfigError> {
        let mut connections: Vec<ConnectionConfig> = Vec::new();
        for (i, conn) in raw.into_iter().enumerate() {
            let key = format!("connections[{i}]");
            let name = self.connection_name(&key, &conn.name)?;
            if connections.iter().any(|c| c.name == name) {
                return self.err(
                    conn.name.span(),
                    &format!("{key}.name"),
                    format!("duplicate connection {name}"),
                );
            }
            let target = self.target(&key, &conn)?;
            let agent = self.runner(&key, &conn, &target)?;
            let policy = match conn.access_requests {
                None => Policy {
                    enabled: false,
                    approval_groups: vec![],
                    require_approval_for: RequireApprovalFor::All,
                    exempt_groups: vec![],
                    admin_auto_approve: true,
                    timeout: DEFAULT_TIMEOUT,
                },
                Some(ar) => self.policy(&format!("{key}.access_requests"), ar, known)?,
            };
            if agent.as_deref() == Some(EMBEDDED_AGENT)
                && let Err(message) = target.check()
            {
                return self.err(conn.name.span(), &key, message);
            }
            if agent.as_deref() == Some(EMBEDDED_AGENT)
                && conn.kind == ConnectionType::Command
                && !server.allow_embedded_command
            {
                return self.err(
                    conn.name.span(),
                    &key,
                    "a command connection run by the server itself runs as the server's own user; \
                     run it on a remote agent (agent = \"NAME\"), or accept the risk with \
                     allow_embedded_command = true under [server]"
                        .into(),
                );
            }
            let pickup_timeout = match &conn.pickup_timeout {
                Some(t) => self.duration(t, &format!("{key}.pickup_timeout"), MAX_TIMEOUT)?,
                None => DEFAULT_PICKUP_TIMEOUT,
            };
            let slack_channel = conn
                .slack_channel
                .as_ref()
                .map(|c| self.slack_channel(c, &format!("{key}.slack_channel")))
                .transpose()?;
            connections.push(ConnectionConfig {
                name,
                kind: conn.kind,
                target,
                agent,
                policy,
                pickup_timeout,
                slack_channel,
            });
        }
        Ok(connections)
    }

    /// The `name` of connection `key`, trimmed.
    fn connection_name(
        &self,
        key: &str,
        name: &Spanned<String>,
    ) -> Result<ConnectionName, ConfigError> {
        ConnectionName::parse(name.get_ref().trim())
            .or_else(|message| self.err(name.span(), &format!("{key}.name"), message.to_string()))
    }

    /// Which agent runs a connection: the one it names, else `embedded` when the server's config
    /// says how to reach it. Refuses what would silently never run: a remote agent's connection
    /// with a `url` or `command` here (the agent uses its own config), and a command connection
    /// with neither a program nor an agent.
    fn runner(
        &self,
        key: &str,
        conn: &RawConnection,
        target: &ConnectionTarget,
    ) -> Result<Option<String>, ConfigError> {
        let reachable = target.url.is_some() || target.command.is_some();
        match conn.agent.as_deref() {
            Some(agent) if agent != EMBEDDED_AGENT && reachable => self.err(
                conn.name.span(),
                key,
                format!(
                    "agent {agent:?} runs this connection with the `url`/`command` of its own \
                     agent config, so the one given here would be ignored; remove it, or drop \
                     `agent` to run the connection inside `hoop serve`"
                ),
            ),
            Some(agent) => Ok(Some(agent.to_string())),
            None if reachable => Ok(Some(EMBEDDED_AGENT.to_string())),
            None if conn.kind == ConnectionType::Command => self.err(
                conn.name.span(),
                key,
                "a command connection needs `command` (run by `hoop serve`) or `agent` (run by \
                 a remote agent); without either its requests would wait forever"
                    .into(),
            ),
            None => Ok(None),
        }
    }

    /// How to reach a connection, from its `url`/`command` and limits.
    fn target(&self, key: &str, conn: &RawConnection) -> Result<ConnectionTarget, ConfigError> {
        let statement_timeout = match &conn.statement_timeout {
            None => None,
            Some(t) => Some(self.duration(t, &format!("{key}.statement_timeout"), MAX_TIMEOUT)?),
        };
        let command = match &conn.command {
            Some(cmd) if cmd.get_ref().is_empty() => {
                return self.err(
                    cmd.span(),
                    &format!("{key}.command"),
                    "must name a program, e.g. [\"bash\"]".into(),
                );
            }
            other => other.as_ref().map(|c| c.get_ref().clone()),
        };
        if !conn.env.is_empty() && conn.kind != ConnectionType::Command {
            return self.err(
                conn.name.span(),
                &format!("{key}.env"),
                "only command connections take an environment".into(),
            );
        }
        Ok(ConnectionTarget {
            kind: conn.kind,
            url: conn.url.clone().map(SecretString::from),
            command,
            statement_timeout,
            max_rows: match &conn.max_rows {
                Some(rows) => self.size(rows, &format!("{key}.max_rows"), MAX_MAX_ROWS)?,
                None => DEFAULT_MAX_ROWS,
            },
            max_output_bytes: match &conn.max_output_bytes {
                Some(bytes) => self.size(
                    bytes,
                    &format!("{key}.max_output_bytes"),
                    MAX_MAX_OUTPUT_BYTES,
                )?,
                None => DEFAULT_MAX_OUTPUT_BYTES,
            },
            env: conn.env.clone(),
        })
    }

    pub(super) fn agent(&self, raw: RawAgentConfig) -> Result<AgentConfig, ConfigError> {
        let mut connections: Vec<(ConnectionName, ConnectionTarget)> = Vec::new();
        for (i, conn) in raw.connections.iter().enumerate() {
            let key = format!("connections[{i}]");
            let name = self.connection_name(&key, &conn.name)?;
            if connections.iter().any(|(n, _)| *n == name) {
                return self.err(
                    conn.name.span(),
                    &format!("{key}.name"),
                    format!("duplicate connection {name}"),
                );
            }
            if conn.access_requests.is_some()
                || conn.agent.is_some()
                || conn.pickup_timeout.is_some()
            {
                return self.err(
                    conn.name.span(),
                    &key,
                    "access_requests, agent and pickup_timeout belong in the server's config, not the agent's"
                        .into(),
                );
            }
            let target = self.target(&key, conn)?;
            if let Err(message) = target.check() {
                return self.err(conn.name.span(), &key, message);
            }
            connections.push((name, target));
        }
        if connections.is_empty() {
            return Err(ConfigError {
                location: self.origin.to_string(),
                message: "connections: an agent needs at least one [[connections]] entry".into(),
            });
        }
        Ok(AgentConfig {
            server_url: raw.agent.server_url.trim_end_matches('/').to_string(),
            token: raw.agent.token.into(),
            connections,
        })
    }

    fn policy(
        &self,
        key: &str,
        ar: RawAccessRequests,
        known: &BTreeSet<String>,
    ) -> Result<Policy, ConfigError> {
        let check = |g: &Spanned<String>, field: &str| -> Result<String, ConfigError> {
            if known.contains(g.get_ref()) {
                Ok(g.get_ref().clone())
            } else {
                self.err(
                    g.span(),
                    &format!("{key}.{field}"),
                    format!(
                        "unknown group {:?} (no user is in it; known groups: {})",
                        g.get_ref(),
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            }
        };
        let listed = ar
            .approval_groups
            .unwrap_or_else(|| Spanned::new(0..0, Vec::new()));
        let mut approval_groups = Vec::new();
        for g in listed.get_ref() {
            let name = check(g, "approval_groups")?;
            if approval_groups.contains(&name) {
                return self.err(
                    g.span(),
                    &format!("{key}.approval_groups"),
                    format!("group {name} is listed twice"),
                );
            }
            approval_groups.push(name);
        }
        if ar.enabled && approval_groups.is_empty() {
            return self.err(
                listed.span(),
                &format!("{key}.approval_groups"),
                "access requests are enabled but no approval group is listed".into(),
            );
        }
        let require_approval_for = match ar.require_approval_for {
            None => RequireApprovalFor::All,
            Some(spanned) => {
                let span = spanned.span();
                match spanned.into_inner() {
                    RawRequireFor::Keyword(k) if k == "all" => RequireApprovalFor::All,
                    RawRequireFor::Keyword(k) => {
                        return self.err(
                            span,
                            &format!("{key}.require_approval_for"),
                            format!("{k:?} must be \"all\" or a list of groups"),
                        );
                    }
                    RawRequireFor::Groups(groups) => RequireApprovalFor::Groups(
                        groups
                            .into_iter()
                            .map(|g| check(&Spanned::new(span.clone(), g), "require_approval_for"))
                            .collect::<Result<_, _>>()?,
                    ),
                }
            }
        };
        let exempt_groups = ar
            .exempt_groups
            .iter()
            .map(|g| check(g, "exempt_groups"))
            .collect::<Result<_, _>>()?;
        let timeout = match &ar.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => self.duration(t, &format!("{key}.timeout"), MAX_TIMEOUT)?,
        };
        Ok(Policy {
            enabled: ar.enabled,
            approval_groups,
            require_approval_for,
            exempt_groups,
            admin_auto_approve: ar.admin_auto_approve,
            timeout,
        })
    }

    /// A duration between zero (excluded) and `max`.
    pub(super) fn duration(
        &self,
        value: &Spanned<String>,
        key: &str,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() => self.err(value.span(), key, "must be longer than zero".into()),
            Ok(d) if d > max => self.err(
                value.span(),
                key,
                format!(
                    "{:?} is too long (at most {})",
                    value.get_ref(),
                    humantime::format_duration(max)
                ),
            ),
            Ok(d) => Ok(d),
            Err(e) => self.err(
                value.span(),
                key,
                format!(
                    "{:?} is not a duration like 30s, 5m or 1h ({e})",
                    value.get_ref()
                ),
            ),
        }
    }

    /// A count or size between 1 and `max`.
    fn size(&self, value: &Spanned<usize>, key: &str, max: usize) -> Result<usize, ConfigError> {
        match *value.get_ref() {
            0 => self.err(value.span(), key, "must be at least 1".into()),
            n if n > max => self.err(
                value.span(),
                key,
                format!("{n} is too large (at most {max})"),
            ),
            n => Ok(n),
        }
    }
}
