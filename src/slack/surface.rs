//! The Slack surface: what hoopbot does with what Slack sends it, whichever way it arrives (HTTP
//! endpoints or Socket Mode). Slash commands are in `commands.rs`, clicks and the reject modal in
//! `clicks.rs`; both act only through `Hoop`'s use cases, as the person the Slack account is
//! linked to, so Slack obeys exactly the rules the API does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::web::WebApi;
use crate::config::SlackConfig;
use crate::domain::Identity;
use crate::error::Result;
use crate::service::Hoop;

/// The chat kind linked accounts of Slack are stored under.
pub const KIND: &str = "slack";

/// How long a Slack user's link is trusted without asking the database again, so a burst of
/// clicks from one approver costs one lookup. An unlink through this replica takes effect at once;
/// one through another, within this time (as a revoked token does).
const LINK_TTL: Duration = Duration::from_secs(1);
/// Past this many remembered links, the expired ones are dropped.
const REMEMBERED_LINKS: usize = 10_000;

/// hoopbot's Slack app.
pub struct Slack {
    pub(super) hoop: Hoop,
    pub(super) config: SlackConfig,
    pub(super) web: Arc<WebApi>,
    /// Recently looked-up links: Slack user → (their hoopbot identity, when looked up).
    links: Mutex<HashMap<String, (Identity, Instant)>>,
}

impl Slack {
    pub fn new(hoop: Hoop, config: SlackConfig) -> anyhow::Result<Arc<Slack>> {
        let web = Arc::new(WebApi::new(&config.api_base_url, &config.bot_token)?);
        Ok(Arc::new(Slack {
            hoop,
            config,
            web,
            links: Mutex::default(),
        }))
    }

    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The hoopbot user a Slack user is linked to, with their current groups.
    pub(super) async fn linked(&self, slack_user: &str) -> Result<Option<Identity>> {
        if let Some((me, at)) = self.links.lock().expect("links lock").get(slack_user)
            && at.elapsed() < LINK_TTL
        {
            return Ok(Some(me.clone()));
        }
        let me = self.hoop.linked_identity(KIND, slack_user).await?;
        // Only links are remembered: someone who just linked is never told they are not.
        if let Some(me) = &me {
            let mut links = self.links.lock().expect("links lock");
            if links.len() >= REMEMBERED_LINKS {
                links.retain(|_, (_, at)| at.elapsed() < LINK_TTL);
            }
            links.insert(slack_user.to_string(), (me.clone(), Instant::now()));
        }
        Ok(me)
    }

    /// Forgets a remembered link (the user unlinked).
    pub(super) fn forget(&self, slack_user: &str) {
        self.links.lock().expect("links lock").remove(slack_user);
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
