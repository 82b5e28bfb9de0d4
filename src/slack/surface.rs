//! The Slack surface: what hoopbot does with what Slack sends it, whichever way it arrives (HTTP
//! endpoints or Socket Mode). Slash commands are in `commands.rs`, clicks and the reject modal in
//! `clicks.rs`; both act only through `Hoop`'s use cases, as the person the Slack account is
//! linked to, so Slack obeys exactly the rules the API does.

use std::sync::Arc;

use super::web::WebApi;
use crate::config::SlackConfig;
use crate::domain::Identity;
use crate::error::Result;
use crate::service::Hoop;

/// The chat kind linked accounts of Slack are stored under.
pub const KIND: &str = "slack";

/// hoopbot's Slack app.
pub struct Slack {
    pub(super) hoop: Hoop,
    pub(super) config: SlackConfig,
    pub(super) web: Arc<WebApi>,
}

impl Slack {
    pub fn new(hoop: Hoop, config: SlackConfig) -> anyhow::Result<Arc<Slack>> {
        let web = Arc::new(WebApi::new(&config.api_base_url, &config.bot_token)?);
        Ok(Arc::new(Slack { hoop, config, web }))
    }

    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The hoopbot user a Slack user is linked to, with their current groups.
    pub(super) async fn linked(&self, slack_user: &str) -> Result<Option<Identity>> {
        self.hoop.linked_identity(KIND, slack_user).await
    }

    /// Tells `user` something only they see, in `channel`, after the interaction is acknowledged.
    /// Best effort: Slack shows nothing for a lost ephemeral, and the decision (or refusal) it
    /// describes is already settled and in the audit trail.
    pub(super) fn tell(&self, channel: Option<String>, user: String, text: String) {
        let web = self.web.clone();
        tokio::spawn(async move {
            // Without a channel (a click in a modal) there is nowhere to show it; DM instead.
            let channel = match channel {
                Some(channel) => channel,
                None => match web.open_dm(&user).await {
                    Ok(dm) => dm,
                    Err(e) => {
                        tracing::warn!(error = %e, user, "cannot open a DM for a Slack reply");
                        return;
                    }
                },
            };
            if let Err(e) = web.post_ephemeral(&channel, &user, &text).await {
                tracing::warn!(error = %e, user, channel, "cannot send a Slack reply");
            }
        });
    }
}
