//! The one Slack workspace (and app) hoopbot serves, and the check that what Slack sends names
//! them. A signature proves only that Slack sent a request for this app; if the app is installed
//! in another workspace too, or a request is put together by hand, the payload's workspace is a
//! claim like any other. So every click, modal submission and slash command must carry the team
//! id of the workspace the bot token belongs to (`auth.test`, asked once), the Enterprise Grid
//! org's id where it carries one, and the app's id when `slack.app_id` is set.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use slack_morphism::prelude::*;
use tokio::sync::OnceCell;

use super::clicks::Click;
use super::surface::Slack;
use super::web::CallError;

/// How long a request from Slack waits at most for `auth.test` to say which workspace hoopbot
/// serves: Slack gives up on an answer after 3 seconds, and the rest of the answer needs time too.
pub const WORKSPACE_WAIT: Duration = Duration::from_millis(1500);

/// The workspace the bot token belongs to, as `auth.test` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// `T…`
    pub team: String,
    /// `E…`, for a workspace in an Enterprise Grid org.
    pub enterprise: Option<String>,
}

/// Where a request from Slack says it comes from. An empty id counts as none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    pub team: Option<String>,
    pub enterprise: Option<String>,
    pub app: Option<String>,
}

/// Why a request was not taken as coming from this workspace and app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// The payload names no workspace (`team.id`, `team_id`).
    NoTeam,
    OtherTeam(String),
    OtherEnterprise(String),
    /// `slack.app_id` is set and the payload names no app (`api_app_id`).
    NoApp,
    OtherApp(String),
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Foreign::NoTeam => write!(f, "the request names no Slack workspace"),
            Foreign::OtherTeam(team) => write!(f, "the request comes from workspace {team:?}"),
            Foreign::OtherEnterprise(org) => write!(f, "the request comes from org {org:?}"),
            Foreign::NoApp => write!(f, "the request names no Slack app"),
            Foreign::OtherApp(app) => write!(f, "the request is for app {app:?}"),
        }
    }
}

impl Foreign {
    /// Whether the payload left out an id Slack always sends (a malformed request, rather than
    /// one from somewhere else).
    pub fn is_missing(&self) -> bool {
        matches!(self, Foreign::NoTeam | Foreign::NoApp)
    }
}

/// Why a request's workspace could not be checked, or was not this one.
#[derive(Debug, thiserror::Error)]
pub enum NotAdmitted {
    #[error("{0}")]
    Foreign(Foreign),
    /// `auth.test` failed, so which workspace hoopbot serves is not known yet.
    #[error("cannot learn the bot token's workspace from Slack (auth.test): {0}")]
    Unknown(CallError),
}

/// The workspace, once `auth.test` has answered; asked again after a failure.
#[derive(Default)]
pub(super) struct WorkspaceMemory(OnceCell<Workspace>);

impl Slack {
    /// Lets `sender` through if it names the workspace the bot token belongs to (and its
    /// Enterprise Grid org, if it names one) and, when `slack.app_id` is set, that app.
    ///
    /// Waits at most [`WORKSPACE_WAIT`] for Slack to say which workspace that is, so a request is
    /// answered in time whatever Slack's API does; [`Slack::learn_workspace`] asks at start, so
    /// requests normally find it known.
    pub async fn admit(&self, sender: &Sender) -> Result<(), NotAdmitted> {
        let workspace = match tokio::time::timeout(WORKSPACE_WAIT, self.workspace()).await {
            Ok(known) => known.map_err(NotAdmitted::Unknown)?,
            Err(_) => {
                return Err(NotAdmitted::Unknown(CallError::Unreachable(format!(
                    "auth.test gave no answer within {} ms",
                    WORKSPACE_WAIT.as_millis()
                ))));
            }
        };
        let foreign = |f| Err(NotAdmitted::Foreign(f));
        match &sender.team {
            None => return foreign(Foreign::NoTeam),
            Some(team) if *team != workspace.team => {
                return foreign(Foreign::OtherTeam(team.clone()));
            }
            Some(_) => {}
        }
        if let Some(org) = &sender.enterprise
            && workspace.enterprise.as_ref() != Some(org)
        {
            return foreign(Foreign::OtherEnterprise(org.clone()));
        }
        if let Some(app_id) = &self.config.app_id {
            match &sender.app {
                None => return foreign(Foreign::NoApp),
                Some(app) if app != app_id => return foreign(Foreign::OtherApp(app.clone())),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Asks Slack which workspace the bot token belongs to, and remembers it: `hoop serve` does
    /// this at start, so the first request need not wait for Slack.
    pub async fn learn_workspace(&self) -> Result<(), CallError> {
        self.workspace().await.map(|_| ())
    }

    /// The workspace the bot token belongs to: asked of Slack the first time, then remembered
    /// (a token never moves to another workspace).
    pub(super) async fn workspace(&self) -> Result<&Workspace, CallError> {
        self.workspace
            .0
            .get_or_try_init(|| self.web.workspace())
            .await
    }
}

/// The ids of a slash command's form (`team_id`, `enterprise_id`, `api_app_id`).
#[derive(Deserialize)]
struct CommandIds {
    team_id: Option<String>,
    enterprise_id: Option<String>,
    api_app_id: Option<String>,
}

impl Sender {
    /// Who a slash command's form (as posted over HTTP) says sent it.
    pub fn of_command_form(body: &[u8]) -> Sender {
        let ids: Option<CommandIds> = serde_urlencoded::from_bytes(body).ok();
        ids.map_or_else(Sender::default, |ids| Sender {
            team: given(ids.team_id),
            enterprise: given(ids.enterprise_id),
            app: given(ids.api_app_id),
        })
    }

    /// Who an interaction payload (a click, a modal submission, …) says sent it.
    pub fn of_interaction(click: &Click) -> Sender {
        Sender {
            team: given(click.team.as_ref().map(|t| t.id.clone())),
            enterprise: given(click.enterprise.as_ref().map(|e| e.id.clone())),
            app: given(click.api_app_id.clone()),
        }
    }

    /// Who a slash command that came over Socket Mode says sent it. slack-morphism's typed
    /// command keeps only the team; the app is the one whose token opened the socket, `app`.
    pub fn of_socket_command(command: &SlackCommandEvent, app: Option<String>) -> Sender {
        Sender {
            team: given(Some(command.team_id.to_string())),
            enterprise: None,
            app,
        }
    }

    /// Who an interaction that came over Socket Mode says sent it: its team, and its app where
    /// the typed event keeps it (a click), else the socket's own, `app`. None for the kinds
    /// hoopbot does nothing with.
    pub fn of_socket_interaction(
        event: &SlackInteractionEvent,
        app: Option<String>,
    ) -> Option<Sender> {
        let (team, app) = match event {
            SlackInteractionEvent::BlockActions(click) => (
                click.team.id.to_string(),
                Some(click.api_app_id.to_string()),
            ),
            SlackInteractionEvent::ViewSubmission(submitted) => {
                (submitted.team.id.to_string(), app)
            }
            _ => return None,
        };
        Some(Sender {
            team: given(Some(team)),
            enterprise: None,
            app: given(app),
        })
    }
}

fn given(id: Option<String>) -> Option<String> {
    id.filter(|id| !id.trim().is_empty())
}
