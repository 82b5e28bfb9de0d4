//! The use cases of chat notifiers (Slack; Teams next): who a request's messages go to, and where
//! each message was posted, so any replica updates the same copies later.

use super::Hoop;
use crate::domain::{self, AccessRequest, Email, Identity, YouMay};
use crate::error::Result;
use crate::store::PostedMessage;

/// Someone a request concerns (a possible approver, or its requester) who linked a chat account.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedPerson {
    /// Their account in the chat (a Slack user id).
    pub account: String,
    /// The hoopbot user behind it, with their groups as the config says now.
    pub identity: Identity,
    /// What they may do with the request now: the one rule, on the service's clock.
    pub you_may: YouMay,
}

impl Hoop {
    /// The people `request` concerns who linked an account of chat `kind`: members of any of its
    /// approval groups, and its requester, each with what they may do with it now. One query
    /// however many they are.
    pub async fn linked_people(
        &self,
        kind: &str,
        request: &AccessRequest,
    ) -> Result<Vec<LinkedPerson>> {
        let concerned = |user: &Identity| {
            user.email.as_str().eq_ignore_ascii_case(&request.requester)
                || request
                    .approval_groups
                    .iter()
                    .any(|g| user.groups.contains(&g.group))
        };
        let users: Vec<Identity> = self.users().into_iter().filter(concerned).collect();
        let emails: Vec<&str> = users.iter().map(|u| u.email.as_str()).collect();
        let links = self.store.accounts_of(kind, &emails).await?;
        let now = self.now().await?;
        Ok(links
            .into_iter()
            .filter_map(|link| {
                let identity = self.identity(&Email::parse(&link.email).ok()?)?;
                Some(LinkedPerson {
                    account: link.account,
                    you_may: domain::you_may(request, &identity, now),
                    identity,
                })
            })
            .collect())
    }

    /// The people who may approve `request` now and have linked no account of chat `kind`: for
    /// a chat that can find them by their email, to link them (`link_verified_email`) before it
    /// sends the request's messages.
    pub async fn approvers_without_link(
        &self,
        kind: &str,
        request: &AccessRequest,
    ) -> Result<Vec<Identity>> {
        let now = self.now().await?;
        let approvers: Vec<Identity> = self
            .users()
            .into_iter()
            .filter(|user| domain::you_may(request, user, now).may_approve())
            .collect();
        let emails: Vec<&str> = approvers.iter().map(|u| u.email.as_str()).collect();
        let linked = self.store.accounts_of(kind, &emails).await?;
        Ok(approvers
            .into_iter()
            .filter(|user| {
                !linked
                    .iter()
                    .any(|link| link.email.eq_ignore_ascii_case(user.email.as_str()))
            })
            .collect())
    }

    /// Every message of chat `kind` posted about request `id` (each copy of its card), oldest
    /// first.
    pub async fn posted_messages(&self, kind: &str, id: &str) -> Result<Vec<PostedMessage>> {
        Ok(self.store.posted_about(kind, id).await?)
    }

    /// Records where a message about a request was posted and the version it shows now.
    pub async fn record_posted(&self, message: &PostedMessage) -> Result<()> {
        Ok(self.store.save_posted(message).await?)
    }
}
