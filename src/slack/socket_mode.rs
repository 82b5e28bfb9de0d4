//! Socket Mode: Slack's events over a WebSocket that hoopbot opens, for servers without a public
//! URL (`slack.app_token`). The same handlers as the HTTP endpoints answer; slack-morphism's
//! listener acknowledges each envelope with its `envelope_id` once the handler has returned (so a
//! click's decision is committed first), and reconnects on a `disconnect` message or a dropped
//! socket. Slack authenticates the socket, so envelopes carry no signature to check, and none to
//! replay either: the replay check of the HTTP endpoints (`http/slack.rs`) has nothing to do
//! here, as an envelope arrives only over the app's own socket, opened with its app token. Each
//! command and interaction must still name the workspace hoopbot serves (`workspace.rs`): an app
//! installed in several workspaces gets all their envelopes on the same socket.

use std::sync::Arc;

use secrecy::ExposeSecret;
use slack_morphism::prelude::*;
use tokio::sync::watch;

use super::surface::Slack;
use super::web::Connector;
use super::workspace::{NotAdmitted, Sender};

/// Sockets kept open at once. Slack hands each envelope to any open socket of the app, and asks a
/// socket to go (`disconnect`) from time to time; with two, one is still there while the other
/// reconnects. They are opened `STAGGER` apart.
pub const SOCKETS: u32 = 2;
/// How long after one socket the next is opened (slack-morphism's default).
const STAGGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Listens until `stop` turns true.
pub async fn run(slack: Arc<Slack>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let Some(app_token) = slack.config.app_token.as_ref() else {
        anyhow::bail!("Socket Mode needs slack.app_token (xapp-…)");
    };
    let token = SlackApiToken::new(app_token.expose_secret().to_string().into());
    let environment = Arc::new(
        SlackClientEventsListenerEnvironment::new(slack.web.client())
            .with_error_handler(on_error)
            .with_user_state(slack.clone()),
    );
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_command_events(on_command)
        .with_interaction_events(on_interaction);
    let listener = SlackClientSocketModeListener::new(
        &SlackClientSocketModeConfig::new()
            .with_max_connections_count(SOCKETS)
            .with_initial_backoff_in_seconds(STAGGER.as_secs()),
        environment,
        callbacks,
    );
    listener.listen_for(&token).await?;
    listener.start().await;
    tracing::info!("listening to Slack over Socket Mode");
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    listener.shutdown().await;
    Ok(())
}

async fn surface(state: &SlackClientEventsUserState) -> Arc<Slack> {
    state
        .read()
        .await
        .get_user_state::<Arc<Slack>>()
        .expect("the Slack surface is the listener's state")
        .clone()
}

async fn on_command(
    command: SlackCommandEvent,
    _client: Arc<SlackClient<Connector>>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let slack = surface(&state).await;
    // The typed command keeps only its team; the socket is this app's own.
    let sender = Sender::of_socket_command(&command, slack.config.app_id.clone());
    if let Err(refused) = slack.admit(&sender).await {
        return Ok(SlackCommandEventResponse::new(
            SlackMessageContent::new().with_text(refusal(&refused)),
        )
        .with_response_type(SlackMessageResponseType::Ephemeral));
    }
    Ok(slack.slash_command(&command).await)
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackClient<Connector>>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<SlackInteractionResponse> {
    let slack = surface(&state).await;
    let sender = Sender::of_socket_interaction(&event, slack.config.app_id.clone());
    if let Some(sender) = sender
        && let Err(refused) = slack.admit(&sender).await
    {
        refusal(&refused);
        return Ok(SlackInteractionResponse::Empty);
    }
    Ok(slack.interaction(event).await)
}

/// Logs why an envelope was not acted on; returns what to tell the person who typed a command.
fn refusal(refused: &NotAdmitted) -> String {
    match refused {
        NotAdmitted::Foreign(foreign) => {
            tracing::warn!(%foreign, "refused a Socket Mode envelope from another workspace");
            "This hoopbot serves another Slack workspace; nothing was done.".into()
        }
        NotAdmitted::Unknown(e) => {
            tracing::error!(error = %e, "cannot check a Socket Mode envelope's workspace");
            "Something went wrong on the hoopbot server; nothing was changed. Try again in a moment."
                .into()
        }
    }
}

fn on_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<SlackClient<Connector>>,
    _state: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!(%error, "Slack Socket Mode error");
    HttpStatusCode::OK
}
