//! The Slack surface: what hoopbot does with what Slack sends it, whichever way it arrives (HTTP
//! endpoints or Socket Mode). Slash commands are in `commands.rs`, clicks and the reject modal in
//! `clicks.rs`; both act only through `Hoop`'s use cases, as the person the Slack account is
//! linked to, so Slack obeys exactly the rules the API does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::web::WebApi;
use super::workspace::WorkspaceMemory;
use crate::config::SlackConfig;
use crate::domain::Identity;
use crate::error::Result;
use crate::expiring::ExpiringMap;
use crate::service::Hoop;

/// The chat kind linked accounts of Slack are stored under.
pub const KIND: &str = "slack";

/// How long a Slack user's link is trusted without asking the database again, so a burst of
/// clicks from one approver costs one lookup. An unlink through this replica takes effect at once,
/// even on a lookup already under way; one through another, within this time (as a revoked token
/// does).
const LINK_TTL: Duration = Duration::from_secs(1);
/// Past this many remembered links, the expired ones are dropped (or, if none, all).
const REMEMBERED_LINKS: usize = 10_000;

/// hoopbot's Slack app.
pub struct Slack {
    pub(super) hoop: Hoop,
    pub(super) config: SlackConfig,
    pub(super) web: Arc<WebApi>,
    links: LinkMemory,
    /// The workspace the bot token belongs to, once Slack has said.
    pub(super) workspace: WorkspaceMemory,
}

impl Slack {
    pub fn new(hoop: Hoop, config: SlackConfig) -> anyhow::Result<Arc<Slack>> {
        let web = Arc::new(WebApi::new(&config.api_base_url, &config.bot_token)?);
        Ok(Arc::new(Slack {
            hoop,
            config,
            web,
            links: LinkMemory::default(),
            workspace: WorkspaceMemory::default(),
        }))
    }

    pub fn config(&self) -> &SlackConfig {
        &self.config
    }

    /// The use cases the surface acts through (the HTTP endpoints' replay check uses them too).
    pub fn hoop(&self) -> &Hoop {
        &self.hoop
    }

    /// The hoopbot user a Slack user is linked to, with their current groups.
    pub(super) async fn linked(&self, slack_user: &str) -> Result<Option<Identity>> {
        self.links
            .recall_or(slack_user, self.hoop.linked_identity(KIND, slack_user))
            .await
    }

    /// Forgets a remembered link (the user unlinked).
    pub(super) fn forget(&self, slack_user: &str) {
        self.links.forget(slack_user);
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

/// Recently looked-up links: Slack user → their hoopbot identity, for [`LINK_TTL`].
struct LinkMemory {
    links: Mutex<ExpiringMap<String, Identity>>,
}

impl Default for LinkMemory {
    fn default() -> Self {
        LinkMemory {
            links: Mutex::new(ExpiringMap::new(REMEMBERED_LINKS)),
        }
    }
}

impl LinkMemory {
    /// The link remembered for `slack_user`, or what `look_up` finds. Only links are remembered
    /// (someone who just linked is never told they are not), and not one found by a lookup that
    /// began before an unlink through this replica.
    async fn recall_or(
        &self,
        slack_user: &str,
        look_up: impl Future<Output = Result<Option<Identity>>>,
    ) -> Result<Option<Identity>> {
        let (began, looked_up_at) = {
            let links = self.lock();
            if let Some(me) = links.get(slack_user) {
                return Ok(Some(me.clone()));
            }
            (links.generation(), links.now())
        };
        let me = look_up.await?;
        if let Some(me) = &me {
            self.lock().insert_unless_removed_since(
                began,
                slack_user.to_string(),
                me.clone(),
                looked_up_at + LINK_TTL,
            );
        }
        Ok(me)
    }

    fn forget(&self, slack_user: &str) {
        self.lock().remove(slack_user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiringMap<String, Identity>> {
        self.links.lock().expect("links lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Email;

    fn bob() -> Identity {
        Identity {
            email: Email::parse("bob@x.com").unwrap(),
            groups: ["dba-team".to_string()].into(),
            is_admin: false,
        }
    }

    async fn not_looked_up() -> Result<Option<Identity>> {
        panic!("a remembered link is not looked up again")
    }

    #[tokio::test]
    async fn a_link_is_remembered_and_an_unlink_forgets_it() {
        let memory = LinkMemory::default();
        let found = memory.recall_or("U1", async { Ok(Some(bob())) }).await;
        assert_eq!(found.unwrap(), Some(bob()));
        let remembered = memory.recall_or("U1", not_looked_up()).await;
        assert_eq!(remembered.unwrap(), Some(bob()));
        memory.forget("U1");
        let after_unlink = memory.recall_or("U1", async { Ok(None) }).await;
        assert_eq!(after_unlink.unwrap(), None);
    }

    /// The lookup reads the link from the database, then the user unlinks (committed, and
    /// forgotten here) before the lookup is done: what it found must not come back.
    #[tokio::test]
    async fn a_lookup_that_began_before_an_unlink_does_not_bring_the_link_back() {
        let memory = LinkMemory::default();
        let raced = memory
            .recall_or("U1", async {
                memory.forget("U1");
                Ok(Some(bob()))
            })
            .await;
        assert_eq!(
            raced.unwrap(),
            Some(bob()),
            "the lookup answers what it read"
        );
        let next = memory.recall_or("U1", async { Ok(None) }).await;
        assert_eq!(next.unwrap(), None, "the unlink stands");
    }
}
