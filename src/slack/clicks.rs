//! Clicks on a card's buttons and the reject modal. Each click is authorized when it happens,
//! against the linked user's groups as the config says now, and decided through `Hoop::decide`
//! with `via = "slack"`; the decision is committed before Slack gets its acknowledgement. What
//! Slack is told afterwards (a refusal, the modal) goes out after the acknowledgement, and card
//! updates go through the outbox like every other delivery.

use std::collections::HashMap;

use serde::Deserialize;

use slack_morphism::prelude::*;

use super::card::{WORDS, escape};
use super::contract::{self, ButtonValue, ModalContext};
use super::surface::Slack;
use crate::display::single_line;
use crate::domain::{Decision, Identity, Surface, you_may};
use crate::error::Error;
use crate::service::Signed;

/// A click whose signature was seen before: a replay, and nothing was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed;
use crate::sentences::TROUBLE;

/// What hoopbot reads of a `block_actions` payload: who clicked where, and which buttons. Over
/// HTTP a click is read straight into this, skipping the card Slack echoes back in the payload
/// (most of its bytes); over Socket Mode it comes from slack-morphism's typed event.
#[derive(Debug, Clone, Deserialize)]
pub struct Click {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: Option<Id>,
    pub channel: Option<Id>,
    pub trigger_id: Option<String>,
    #[serde(default)]
    pub actions: Vec<Action>,
    /// The workspace, its Enterprise Grid org and the app the payload names (checked before the
    /// click is handled: see `workspace.rs`).
    pub team: Option<Id>,
    pub enterprise: Option<Id>,
    pub api_app_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Id {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub action_id: String,
    pub value: Option<String>,
}

impl From<&SlackInteractionBlockActionsEvent> for Click {
    fn from(event: &SlackInteractionBlockActionsEvent) -> Click {
        Click {
            kind: "block_actions".into(),
            user: event.user.as_ref().map(|u| Id {
                id: u.id.to_string(),
            }),
            channel: event.channel.as_ref().map(|c| Id {
                id: c.id.to_string(),
            }),
            trigger_id: Some(event.trigger_id.to_string()),
            actions: event
                .actions
                .iter()
                .flatten()
                .map(|a| Action {
                    action_id: a.action_id.to_string(),
                    value: a.value.clone(),
                })
                .collect(),
            team: Some(Id {
                id: event.team.id.to_string(),
            }),
            // slack-morphism's typed click has no `enterprise`.
            enterprise: None,
            api_app_id: Some(event.api_app_id.to_string()),
        }
    }
}

impl Slack {
    /// Handles one interaction payload and returns what to acknowledge it with.
    pub async fn interaction(&self, event: SlackInteractionEvent) -> SlackInteractionResponse {
        match event {
            SlackInteractionEvent::BlockActions(click) => {
                // Over Socket Mode, where only Slack can send: no signature, so never a replay.
                let _never_replayed = self.click(Click::from(&click), None).await;
                SlackInteractionResponse::Empty
            }
            SlackInteractionEvent::ViewSubmission(submitted) => {
                self.reason_submitted(submitted).await
            }
            // Closing the modal, shortcuts and the rest ask nothing of hoopbot.
            _ => SlackInteractionResponse::Empty,
        }
    }

    /// Decides on each decision button of a click (Slack sends one).
    /// `signed`: the request's signature, over HTTP. It is recorded with the first thing the click
    /// does (its decision, or before the reject modal opens); [`Replayed`] when it was seen
    /// before, and nothing is done.
    pub async fn click(&self, click: Click, signed: Option<&Signed>) -> Result<(), Replayed> {
        let mut signed = signed;
        let Some(user) = click.user.map(|u| u.id) else {
            return Ok(());
        };
        let channel = click.channel.map(|c| c.id);
        for action in &click.actions {
            let action_id = action.action_id.as_str();
            let approving = action_id.starts_with(contract::APPROVE_ACTION_PREFIX);
            if !approving && action_id != contract::REJECT_ACTION {
                continue;
            }
            let Some(value) = action
                .value
                .as_deref()
                .and_then(|v| serde_json::from_str::<ButtonValue>(v).ok())
            else {
                tracing::warn!(action_id, "a Slack click carried no request; ignored");
                continue;
            };
            let me = match self.linked(&user).await {
                Ok(Some(me)) => me,
                Ok(None) => {
                    self.tell(channel.clone(), user.clone(), self.not_linked());
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot look up a Slack user's link");
                    self.tell(channel.clone(), user.clone(), TROUBLE.into());
                    continue;
                }
            };
            if approving {
                let decision = Decision::Approve {
                    group: value.group.clone(),
                };
                match self
                    .hoop
                    .decide_once(
                        &me,
                        &value.request_id,
                        decision,
                        Surface::Slack,
                        signed.take(),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(Error::Replayed) => return Err(Replayed),
                    Err(e) => {
                        let why = self.refusal(&value.request_id, &e).await;
                        self.tell(channel.clone(), user.clone(), why);
                    }
                }
            } else {
                if let Some(signed) = signed.take() {
                    match self.hoop.first_sighting(signed).await {
                        Ok(true) => {}
                        Ok(false) => return Err(Replayed),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot record a Slack request's signature");
                            self.tell(channel.clone(), user.clone(), TROUBLE.into());
                            continue;
                        }
                    }
                }
                self.ask_reason(
                    &me,
                    &value.request_id,
                    click.trigger_id.as_deref().unwrap_or_default(),
                    channel.clone(),
                    &user,
                )
                .await;
            }
        }
        Ok(())
    }

    /// Opens the reject modal, unless the rules already say this person cannot reject.
    async fn ask_reason(
        &self,
        me: &Identity,
        request_id: &str,
        trigger_id: &str,
        channel: Option<String>,
        user: &str,
    ) {
        let request = match self.hoop.get(request_id).await {
            Ok(request) => request,
            Err(e) => {
                let why = self.refusal(request_id, &e).await;
                return self.tell(channel, user.to_string(), why);
            }
        };
        // The rule the decision will apply, so nobody types a reason to be refused.
        let now = match self.hoop.now().await {
            Ok(now) => now,
            Err(e) => {
                let why = self.refusal(request_id, &e).await;
                return self.tell(channel, user.to_string(), why);
            }
        };
        let may = you_may(&request, me, now);
        if !may.reject {
            let why = may
                .why_not
                .as_ref()
                .map_or_else(String::new, |w| WORDS.why_not(w));
            return self.tell(
                channel,
                user.to_string(),
                format!("You cannot reject this request. {why}"),
            );
        }
        let view = reject_modal(&request);
        let (web, trigger_id, user) = (self.web.clone(), trigger_id.to_string(), user.to_string());
        // The trigger lasts 3 seconds, so the modal opens right after the acknowledgement.
        tokio::spawn(async move {
            if let Err(e) = web.open_view(&trigger_id, view).await {
                tracing::warn!(error = %e, user, "cannot open the reject modal");
            }
        });
    }

    async fn reason_submitted(
        &self,
        submitted: SlackInteractionViewSubmissionEvent,
    ) -> SlackInteractionResponse {
        let SlackView::Modal(modal) = &submitted.view.view else {
            return SlackInteractionResponse::Empty;
        };
        if modal.callback_id.as_ref().map(|c| c.to_string()).as_deref()
            != Some(contract::REJECT_MODAL)
        {
            return SlackInteractionResponse::Empty;
        }
        let Some(context) = modal
            .private_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<ModalContext>(m).ok())
        else {
            return field_error(
                "This form lost track of its request; close it and click Reject again.",
            );
        };
        let reason = submitted
            .view
            .state_params
            .state
            .as_ref()
            .and_then(|s| s.values.get(&contract::REASON_INPUT.into()))
            .and_then(|block| block.get(&contract::REASON_INPUT.into()))
            .and_then(|input| input.value.clone())
            .unwrap_or_default();
        let user = submitted.user.id.to_string();
        let me = match self.linked(&user).await {
            Ok(Some(me)) => me,
            Ok(None) => return field_error(&self.not_linked()),
            Err(e) => {
                tracing::error!(error = %e, "cannot look up a Slack user's link");
                return field_error(TROUBLE);
            }
        };
        match self
            .hoop
            .decide(
                &me,
                &context.request_id,
                Decision::Reject { reason },
                Surface::Slack,
            )
            .await
        {
            Ok(_) => SlackInteractionResponse::ViewSubmission(SlackViewSubmissionResponse::Clear(
                SlackViewSubmissionClearResponse::new(),
            )),
            Err(e) => field_error(&self.refusal(&context.request_id, &e).await),
        }
    }

    /// Why a decision was refused, in words for the person who clicked.
    pub(super) async fn refusal(&self, request_id: &str, error: &Error) -> String {
        if let Error::Internal(e) = error {
            tracing::error!(error = %e, request_id, "a Slack decision failed");
        }
        // How an already decided request was decided, as it is now.
        let now = match error {
            Error::AlreadyDecided(_) => self.hoop.get(request_id).await.ok(),
            _ => None,
        };
        WORDS.refusal(error.code(), &error.to_string(), now.as_ref())
    }
}

/// The modal that asks for a rejection's reason.
fn reject_modal(request: &crate::domain::AccessRequest) -> SlackView {
    let context = ModalContext {
        request_id: request.id.clone(),
    };
    let input = SlackInputBlock::new(
        pt!("Why reject it?"),
        SlackInputBlockElement::PlainTextInput(
            SlackBlockPlainTextInputElement::new()
                .with_action_id(contract::REASON_INPUT.into())
                .with_multiline(true)
                .with_max_length(crate::service::MAX_REASON_BYTES as u64 / 4),
        ),
    )
    .with_block_id(contract::REASON_INPUT.into());
    // Plain text, like every user field on the card: nothing in it is formatting.
    let about = SlackSectionBlock::new().with_text(pt!(
        "Reject {}'s command on {}? The requester sees your reason.",
        escape(&single_line(&request.requester)),
        escape(&single_line(&request.connection))
    ));
    SlackView::Modal(
        SlackModalView::new(
            pt!("Reject request"),
            slack_blocks![some_into(about), some_into(input)],
        )
        .with_submit(pt!("Reject"))
        .with_close(pt!("Cancel"))
        .with_callback_id(contract::REJECT_MODAL.into())
        .with_private_metadata(serde_json::to_string(&context).unwrap_or_default()),
    )
}

/// Keeps the modal open with `message` under the reason field.
fn field_error(message: &str) -> SlackInteractionResponse {
    SlackInteractionResponse::ViewSubmission(SlackViewSubmissionResponse::Errors(
        SlackViewSubmissionErrorsResponse::new(HashMap::from([(
            contract::REASON_INPUT.to_string(),
            message.to_string(),
        )])),
    ))
}
