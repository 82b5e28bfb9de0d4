//! `/hoop subscribe | unsubscribe | status | help`: the slash command's replies, shown only to
//! the person who typed it. The command's name comes from the config (`slack.slash_command`).

use std::time::Duration;

use super::card::{WORDS, escape};
use super::surface::{KIND, Slack};
use crate::display::single_line;
use crate::domain::{Email, Status, you_may};
use crate::service::LINK_CODE_TTL;
use crate::store::ListFilter;

/// What `/hoop …` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    Subscribe,
    Unsubscribe,
    Status,
    Help,
    /// Anything else gets help, not silence.
    Unknown(String),
}

impl Subcommand {
    pub fn parse(text: &str) -> Subcommand {
        let word = text.split_whitespace().next().unwrap_or("help");
        match word.to_ascii_lowercase().as_str() {
            "subscribe" | "link" => Subcommand::Subscribe,
            "unsubscribe" | "unlink" => Subcommand::Unsubscribe,
            "status" => Subcommand::Status,
            "help" => Subcommand::Help,
            _ => Subcommand::Unknown(word.to_string()),
        }
    }
}

/// The most requests `/hoop status` lists in each part.
const STATUS_LIMIT: usize = 10;

/// How long Slack gets to tell a user's verified email (`users.info`) before `/hoop subscribe`
/// answers with a code instead. Slack shows nothing of an answer later than 3 seconds; every
/// slash command is to be answered within 2.5, and the rest of this one's answer (a few
/// database calls) must fit in what is left. It is the only Slack call an answer waits for.
pub const EMAIL_LOOKUP_TIME: Duration = Duration::from_millis(1500);

impl Slack {
    /// Answers a slash command as Slack sent it, for the person who typed it alone.
    pub async fn slash_command(
        &self,
        command: &slack_morphism::prelude::SlackCommandEvent,
    ) -> slack_morphism::prelude::SlackCommandEventResponse {
        use slack_morphism::prelude::*;
        let text = command.text.as_deref().unwrap_or("");
        let answer = self.command(command.user_id.as_ref(), text).await;
        SlackCommandEventResponse::new(SlackMessageContent::new().with_text(answer))
            .with_response_type(SlackMessageResponseType::Ephemeral)
    }

    /// Answers `/hoop <text>` typed by Slack user `user`; the answer is mrkdwn for them alone.
    #[tracing::instrument(skip_all, fields(slack_user = %user))]
    pub async fn command(&self, user: &str, text: &str) -> String {
        let answer = match Subcommand::parse(text) {
            Subcommand::Subscribe => self.subscribe(user).await,
            Subcommand::Unsubscribe => self.unsubscribe(user).await,
            Subcommand::Status => self.status(user).await,
            Subcommand::Help => Ok(self.help(None)),
            Subcommand::Unknown(word) => Ok(self.help(Some(&word))),
        };
        answer.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "slash command failed");
            "Something went wrong on the hoopbot server; nothing was changed. Try again in a moment.".into()
        })
    }

    async fn subscribe(&self, user: &str) -> crate::error::Result<String> {
        if let Some(me) = self.linked(user).await? {
            return Ok(format!(
                "You are already linked to *{}*. `{} unsubscribe` undoes it.",
                escape(me.email.as_str()),
                self.config.slash_command
            ));
        }
        if self.config.link_by_email
            && let Some(email) = self.verified_email(user).await
            && let Some(link) = self.hoop.link_verified_email(KIND, user, &email).await?
        {
            let approval_groups = Email::parse(&link.email)
                .ok()
                .and_then(|email| self.hoop.identity(&email))
                .map(|me| self.hoop.approval_groups_of(&me))
                .unwrap_or_default();
            return Ok(format!(
                "Linked to *{}* by your verified Slack email. {}",
                escape(&link.email),
                WORDS.what_a_link_brings(&approval_groups)
            ));
        }
        let code = self.hoop.start_link(KIND, user).await?;
        Ok(format!(
            "To link this Slack account to your hoopbot user, run this where you are signed in to \
             hoopbot, within {} minutes:\n```hoop subscribe {}```\nor open <{}/link/{}|this link> \
             in your browser. The code works once. Whoever confirms it becomes the hoopbot user \
             behind your clicks, so keep it to yourself.",
            LINK_CODE_TTL.as_secs() / 60,
            code.code,
            escape(self.hoop.public_url()),
            code.code
        ))
    }

    /// The Slack user's email, when Slack says its owner confirmed it within
    /// [`EMAIL_LOOKUP_TIME`]; otherwise the caller falls back to a code.
    async fn verified_email(&self, user: &str) -> Option<String> {
        let info = match tokio::time::timeout(EMAIL_LOOKUP_TIME, self.web.user_info(user)).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "users.info failed; falling back to a link code");
                return None;
            }
            Err(_) => {
                tracing::warn!(
                    "users.info gave no answer within {} ms; falling back to a link code",
                    EMAIL_LOOKUP_TIME.as_millis()
                );
                return None;
            }
        };
        let user = &info["user"];
        // slack-morphism's typed user has no `is_email_confirmed`: read the raw answer.
        if user["is_email_confirmed"].as_bool() != Some(true) {
            return None;
        }
        user["profile"]["email"].as_str().map(str::to_string)
    }

    async fn unsubscribe(&self, user: &str) -> crate::error::Result<String> {
        let unlinked = self
            .hoop
            .unlink(KIND, user, crate::domain::Surface::Slack)
            .await;
        self.forget(user);
        Ok(match unlinked? {
            Some(link) => format!(
                "Unlinked from *{}*. You will get no more DMs, and your clicks no longer count \
                     until you `{} subscribe` again.",
                escape(&link.email),
                self.config.slash_command
            ),
            None => "This Slack account was not linked; nothing changed.".into(),
        })
    }

    async fn status(&self, user: &str) -> crate::error::Result<String> {
        let Some(me) = self.linked(user).await? else {
            return Ok(self.not_linked());
        };
        let pending = self
            .hoop
            .list(&ListFilter {
                awaiting: None,
                status: Some(Status::Pending),
                connection: None,
                requester: None,
                before_id: None,
                limit: 200,
            })
            .await?;
        let (mine, theirs): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|r| r.requester.eq_ignore_ascii_case(me.email.as_str()));
        // Waiting for you: what the one rule lets you approve now.
        let now = self.hoop.now().await?;
        let can_approve: Vec<_> = theirs
            .into_iter()
            .filter(|r| you_may(r, &me, now).may_approve())
            .collect();
        let line = |r: &crate::domain::AccessRequest, who: bool| {
            let groups: Vec<&str> = r.pending_groups().map(|g| g.group.as_str()).collect();
            format!(
                "• <{}|{}> on *{}*{} — waiting for {} (expires {})",
                self.request_url(&r.id),
                escape(&r.id),
                escape(&single_line(&r.connection)),
                if who {
                    format!(" by {}", escape(&single_line(&r.requester)))
                } else {
                    String::new()
                },
                escape(&groups.join(", ")),
                crate::domain::rfc3339(r.expires_at)
            )
        };
        let mut out = format!("Linked to *{}*.\n", escape(me.email.as_str()));
        out.push_str(&section(
            "Waiting for your approval",
            can_approve.iter().map(|r| line(r, true)).collect(),
        ));
        out.push_str(&section(
            "Your own pending requests",
            mine.iter().map(|r| line(r, false)).collect(),
        ));
        Ok(out)
    }

    pub(super) fn request_url(&self, id: &str) -> String {
        crate::view::request_url(self.hoop.public_url(), id)
    }

    /// What a person who is not linked is told, with how to link.
    pub(super) fn not_linked(&self) -> String {
        format!(
            "Your Slack account is not linked to a hoopbot user yet, so hoopbot cannot tell who \
             you are. Run `{} subscribe` to link it.",
            self.config.slash_command
        )
    }

    fn help(&self, unknown: Option<&str>) -> String {
        let c = &self.config.slash_command;
        let mut out = String::new();
        if let Some(word) = unknown {
            out.push_str(&format!(
                "I don't know `{}`. ",
                escape(&single_line(word)).replace('`', "'")
            ));
        }
        out.push_str(&format!(
            "hoopbot holds risky commands until the right people approve them.\n\
             • `{c} subscribe` — link your Slack account to your hoopbot user\n\
             • `{c} unsubscribe` — remove the link\n\
             • `{c} status` — requests waiting for you, and your own\n\
             • `{c} help` — this message"
        ));
        out
    }
}

fn section(title: &str, lines: Vec<String>) -> String {
    let mut out = format!("*{title}*\n");
    if lines.is_empty() {
        out.push_str("_none_\n");
    }
    let more = lines.len().saturating_sub(STATUS_LIMIT);
    for line in lines.into_iter().take(STATUS_LIMIT) {
        out.push_str(&line);
        out.push('\n');
    }
    if more > 0 {
        out.push_str(&format!("…and {more} more\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_lookup_leaves_room_to_answer_in_time() {
        // Every answer within 2.5 s (Slack shows nothing after 3), a second of it for the rest.
        const ANSWER_TIME: Duration = Duration::from_millis(2500);
        assert!(EMAIL_LOOKUP_TIME + Duration::from_secs(1) <= ANSWER_TIME);
    }

    #[test]
    fn subcommands_are_read_from_the_first_word_and_anything_else_gets_help() {
        assert_eq!(Subcommand::parse("subscribe"), Subcommand::Subscribe);
        assert_eq!(Subcommand::parse("  STATUS  now"), Subcommand::Status);
        assert_eq!(Subcommand::parse(""), Subcommand::Help);
        assert_eq!(Subcommand::parse("unsubscribe"), Subcommand::Unsubscribe);
        assert_eq!(
            Subcommand::parse("approve 123"),
            Subcommand::Unknown("approve".into())
        );
    }
}
