//! Slack's Web API, as hoopbot uses it: one attempt per call, with every failure sorted into what
//! the delivery worker needs to know (retry, and when). Retrying is the worker's job, never this
//! module's, so there is one retry loop for every destination.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::card::Message;

/// Why one call to Slack failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// HTTP 429: wait at least `retry_after` when Slack said how long.
    #[error("rate limited by Slack{}", .retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// Slack answered `ok: false` with this error code (`channel_not_found`, `invalid_auth`, …).
    #[error("Slack refused the call: {code}")]
    Refused { code: String },
    /// Slack answered with an HTTP error status.
    #[error("Slack answered HTTP {status}")]
    Http { status: u16 },
    /// No answer: the connection failed or timed out, or the answer made no sense.
    #[error("could not reach Slack: {0}")]
    Unreachable(String),
}

impl CallError {
    /// The HTTP status of the answer, when there was one (as delivery attempts record it).
    pub fn status(&self) -> Option<i64> {
        match self {
            CallError::RateLimited { .. } => Some(429),
            CallError::Refused { .. } => Some(200),
            CallError::Http { status } => Some(i64::from(*status)),
            CallError::Unreachable(_) => None,
        }
    }
}

impl From<SlackClientError> for CallError {
    fn from(e: SlackClientError) -> CallError {
        match e {
            SlackClientError::RateLimitError(e) => CallError::RateLimited {
                retry_after: e.retry_after,
            },
            SlackClientError::ApiError(e) => CallError::Refused { code: e.code },
            SlackClientError::HttpError(e) => CallError::Http {
                status: e.status_code.as_u16(),
            },
            // The rest carry no secrets, but may be long (a body): one line is enough.
            other => CallError::Unreachable(
                other
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
        }
    }
}

pub(super) type Connector = SlackClientHyperConnector<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
>;

/// The bot's side of Slack's Web API.
pub struct WebApi {
    client: Arc<SlackClient<Connector>>,
    token: SlackApiToken,
    timeout: Duration,
}

/// How long one call may take: a card update that hangs must not hold its delivery's claim.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl WebApi {
    /// A client for the API at `base_url` (`https://slack.com/api`), acting with `bot_token`.
    pub fn new(base_url: &str, bot_token: &SecretString) -> anyhow::Result<WebApi> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            // Plain http only where the config points at it (a fake Slack in tests).
            .https_or_http()
            .enable_http1()
            .build();
        let connector =
            SlackClientHyperConnector::with_connector(https).with_slack_api_url(base_url);
        Ok(WebApi {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(bot_token.expose_secret().to_string().into()),
            timeout: CALL_TIMEOUT,
        })
    }

    /// The client itself, for Socket Mode's listener.
    pub(super) fn client(&self) -> Arc<SlackClient<Connector>> {
        self.client.clone()
    }

    async fn call<T>(
        &self,
        call: impl AsyncFnOnce(SlackClientSession<'_, Connector>) -> ClientResult<T>,
    ) -> Result<T, CallError> {
        let session = self.client.open_session(&self.token);
        match tokio::time::timeout(self.timeout, call(session)).await {
            Ok(answer) => answer.map_err(CallError::from),
            Err(_) => Err(CallError::Unreachable(format!(
                "no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Posts `message` to `channel`; returns the channel and `ts` that name it from now on.
    pub async fn post(
        &self,
        channel: &str,
        message: &Message,
    ) -> Result<(String, String), CallError> {
        let request = SlackApiChatPostMessageRequest::new(channel.into(), content(message));
        let posted = self
            .call(async |s| s.chat_post_message(&request).await)
            .await?;
        Ok((posted.channel.to_string(), posted.ts.to_string()))
    }

    /// Replaces the message `ts` in `channel` with `message`.
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        message: &Message,
    ) -> Result<(), CallError> {
        let request = SlackApiChatUpdateRequest::new(channel.into(), content(message), ts.into());
        self.call(async |s| s.chat_update(&request).await).await?;
        Ok(())
    }

    /// Shows `text` to `user` alone, in `channel`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), CallError> {
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            SlackMessageContent::new().with_text(text.to_string()),
        );
        self.call(async |s| s.chat_post_ephemeral(&request).await)
            .await?;
        Ok(())
    }

    /// The id of the bot's direct-message conversation with `user`, opening it if needed.
    pub async fn open_dm(&self, user: &str) -> Result<String, CallError> {
        let request = SlackApiConversationsOpenRequest::new().with_users(vec![user.into()]);
        let opened = self
            .call(async |s| s.conversations_open(&request).await)
            .await?;
        Ok(opened.channel.id.to_string())
    }

    /// Opens `view` as a modal for the click that gave `trigger_id` (valid for 3 seconds).
    pub async fn open_view(&self, trigger_id: &str, view: SlackView) -> Result<(), CallError> {
        let request = SlackApiViewsOpenRequest::new(trigger_id.into(), view);
        self.call(async |s| s.views_open(&request).await).await?;
        Ok(())
    }

    /// `users.info` as Slack sent it: the typed user leaves out `is_email_confirmed`.
    pub async fn user_info(&self, user: &str) -> Result<serde_json::Value, CallError> {
        let params = vec![("user", Some(user.to_string()))];
        self.call(async |s| {
            s.http_session_api
                .http_get("users.info", &params, None)
                .await
        })
        .await
    }

    /// `users.lookupByEmail`, as Slack sent it: the workspace's user with that email, if any.
    pub async fn lookup_by_email(&self, email: &str) -> Result<serde_json::Value, CallError> {
        let params = vec![("email", Some(email.to_string()))];
        self.call(async |s| {
            s.http_session_api
                .http_get("users.lookupByEmail", &params, None)
                .await
        })
        .await
    }

    /// `auth.test`: who the bot token belongs to, `(team, bot user)`.
    pub async fn auth_test(&self) -> Result<(String, String), CallError> {
        let me = self.call(async |s| s.auth_test().await).await?;
        Ok((me.team, me.user.unwrap_or_else(|| me.user_id.to_string())))
    }

    /// The workspace the bot token belongs to: `auth.test` as Slack sent it (the typed answer
    /// leaves out `enterprise_id`).
    pub async fn workspace(&self) -> Result<super::Workspace, CallError> {
        let params: Vec<(&str, Option<String>)> = Vec::new();
        let me: serde_json::Value = self
            .call(async |s| {
                s.http_session_api
                    .http_get("auth.test", &params, None)
                    .await
            })
            .await?;
        let id = |key: &str| {
            me[key]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_string)
        };
        Ok(super::Workspace {
            team: id("team_id")
                .ok_or_else(|| CallError::Unreachable("auth.test named no team_id".into()))?,
            enterprise: id("enterprise_id"),
        })
    }

    /// `apps.connections.open`, with an app-level token: whether Socket Mode could connect.
    pub async fn open_socket(&self) -> Result<(), CallError> {
        let request = SlackApiAppsConnectionOpenRequest::new();
        self.call(async |s| s.apps_connections_open(&request).await)
            .await?;
        Ok(())
    }

    /// `conversations.info`, as Slack sent it (the doctor reads `is_member` and `is_archived`).
    pub async fn conversation_info(&self, channel: &str) -> Result<serde_json::Value, CallError> {
        let params = vec![("channel", Some(channel.to_string()))];
        self.call(async |s| {
            s.http_session_api
                .http_get("conversations.info", &params, None)
                .await
        })
        .await
    }
}

fn content(message: &Message) -> SlackMessageContent {
    SlackMessageContent::new()
        .with_text(message.text.clone())
        .with_blocks(message.blocks.clone())
}
