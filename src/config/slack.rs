//! The `[slack]` section: how hoopbot reaches Slack and how Slack reaches it.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use toml::Spanned;

use super::ConfigError;
use super::raw::RawSlack;
use super::validate::Validator;

/// Where Slack's Web API is, unless `api_base_url` says (tests point it at a fake).
pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";
/// About one message a second per channel: Slack's documented pace for posting.
pub const DEFAULT_MESSAGE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a card post or update is retried before it is given up: past a day, a card about a
/// request that has long expired helps nobody.
pub const DEFAULT_SLACK_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The `[slack]` section, validated.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Checks that a request came from Slack (HTTP mode).
    pub signing_secret: SecretString,
    /// `xoxb-…`: posts and updates cards, opens DMs and modals.
    pub bot_token: SecretString,
    /// `xapp-…`: when set, Slack's events arrive over Socket Mode instead of HTTP.
    pub app_token: Option<SecretString>,
    /// The Slack app's id (`A0123456789`): when set, a request from Slack must name this app.
    pub app_id: Option<String>,
    /// The default channel for request cards; a connection's `slack_channel` overrides it.
    pub channel: String,
    pub api_base_url: String,
    /// The slash command as the Slack app defines it, `/hoop` by default.
    pub slash_command: String,
    /// Link a Slack user whose confirmed email is a configured user's, without a code.
    pub link_by_email: bool,
    /// The least time between two messages hoopbot sends to one channel.
    pub message_interval: Duration,
    pub give_up_after: Duration,
}

impl Validator<'_> {
    /// `[slack]`: the secrets set and well-formed, a channel id, an http(s) API URL and a slash
    /// command that starts with `/`.
    pub(super) fn slack(&self, raw: Spanned<RawSlack>) -> Result<SlackConfig, ConfigError> {
        let raw = raw.into_inner();
        let signing_secret = raw.signing_secret.get_ref().trim();
        if signing_secret.is_empty() {
            return self.err(
                raw.signing_secret.span(),
                "slack.signing_secret",
                "is empty; copy it from the Slack app's Basic Information page".into(),
            );
        }
        let bot_token = self.token(
            &raw.bot_token,
            "slack.bot_token",
            "xoxb-",
            "OAuth & Permissions",
        )?;
        let app_token = raw
            .app_token
            .as_ref()
            .map(|t| {
                self.token(
                    t,
                    "slack.app_token",
                    "xapp-",
                    "Basic Information → App-Level Tokens",
                )
            })
            .transpose()?;
        let app_id = raw.app_id.as_ref().map(|id| self.app_id(id)).transpose()?;
        let channel = self.slack_channel(&raw.channel, "slack.channel")?;
        let api_base_url = match &raw.api_base_url {
            None => DEFAULT_SLACK_API.to_string(),
            Some(url) => match reqwest::Url::parse(url.get_ref().trim()) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() =>
                {
                    url.get_ref().trim().trim_end_matches('/').to_string()
                }
                _ => {
                    return self.err(
                        url.span(),
                        "slack.api_base_url",
                        "must be an http:// or https:// URL with a host".into(),
                    );
                }
            },
        };
        let slash_command = match &raw.slash_command {
            None => "/hoop".to_string(),
            Some(command) => {
                let name = command.get_ref().trim();
                let valid = name.len() > 1
                    && name.len() <= 32
                    && name.starts_with('/')
                    && name[1..]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
                if !valid {
                    return self.err(
                        command.span(),
                        "slack.slash_command",
                        format!("{name:?} must be '/' and up to 31 lowercase letters, digits, '-' or '_'"),
                    );
                }
                name.to_string()
            }
        };
        Ok(SlackConfig {
            signing_secret: SecretString::from(signing_secret.to_string()),
            bot_token,
            app_token,
            app_id,
            channel,
            api_base_url,
            slash_command,
            link_by_email: raw.link_by_email,
            message_interval: match &raw.message_interval {
                Some(t) => self.duration(t, "slack.message_interval", Duration::from_secs(60))?,
                None => DEFAULT_MESSAGE_INTERVAL,
            },
            give_up_after: match &raw.give_up_after {
                Some(t) => self.duration(t, "slack.give_up_after", super::MAX_GIVE_UP_AFTER)?,
                None => DEFAULT_SLACK_GIVE_UP_AFTER,
            },
        })
    }

    /// A Slack conversation id as Slack shows it (`C0123456789`): the channel's name would break
    /// when it is renamed, so names are refused with a hint.
    pub(super) fn slack_channel(
        &self,
        raw: &Spanned<String>,
        key: &str,
    ) -> Result<String, ConfigError> {
        let id = raw.get_ref().trim();
        let valid = id.len() >= 9
            && id.len() <= 24
            && id.starts_with(['C', 'G', 'D'])
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !valid {
            return self.err(
                raw.span(),
                key,
                format!(
                    "{id:?} is not a Slack channel id; use the id (like C0123456789) from the \
                     channel's details, not its name"
                ),
            );
        }
        Ok(id.to_string())
    }

    /// A Slack app id as Slack shows it (`A0123456789`, on the app's Basic Information page).
    fn app_id(&self, raw: &Spanned<String>) -> Result<String, ConfigError> {
        let id = raw.get_ref().trim();
        let valid = id.len() >= 9
            && id.len() <= 24
            && id.starts_with('A')
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !valid {
            return self.err(
                raw.span(),
                "slack.app_id",
                format!(
                    "{id:?} is not a Slack app id; copy the App ID (like A0123456789) from the \
                     app's Basic Information page"
                ),
            );
        }
        Ok(id.to_string())
    }

    fn token(
        &self,
        raw: &Spanned<String>,
        key: &str,
        prefix: &str,
        where_to_find: &str,
    ) -> Result<SecretString, ConfigError> {
        let token = raw.get_ref().trim();
        if !token.starts_with(prefix) || token.len() <= prefix.len() {
            // Never the value: it may be a real token pasted into the wrong key.
            return self.err(
                raw.span(),
                key,
                format!(
                    "must be a token starting with {prefix} (the Slack app's {where_to_find} page)"
                ),
            );
        }
        Ok(SecretString::from(token.to_string()))
    }
}

impl SlackConfig {
    /// Whether Slack's events arrive over Socket Mode (an app token is set).
    pub fn socket_mode(&self) -> bool {
        self.app_token.is_some()
    }

    pub fn bot_token(&self) -> &str {
        self.bot_token.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn with_app_id(line: &str) -> Result<Option<String>, String> {
        let text = format!(
            "[server]\n[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-1\"\n\
             channel = \"C0123456789\"\n{line}\n"
        );
        Config::parse(&text, "test")
            .map(|config| config.slack.expect("a [slack] section").app_id)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_app_id_is_optional_and_must_look_like_slacks() {
        assert_eq!(with_app_id(""), Ok(None));
        assert_eq!(
            with_app_id("app_id = \" A0123456789 \""),
            Ok(Some("A0123456789".into()))
        );
        for wrong in [
            "hoopbot",
            "a0123456789",
            "C0123456789",
            "A01",
            "A0123-456789",
        ] {
            let refused = with_app_id(&format!("app_id = \"{wrong}\"")).unwrap_err();
            assert!(refused.contains("slack.app_id"), "{wrong}: {refused}");
        }
    }
}
