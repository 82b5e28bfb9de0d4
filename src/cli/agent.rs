//! `hoop agent`: run next to the resources, dial out to the server, run approved jobs.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::agent::{Agent, HttpQueue};
use crate::client::Client;
use crate::config::AgentConfig;

pub async fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    crate::app::protect_secrets_in_memory();
    let config = AgentConfig::load(config_path)?;
    crate::client::check_server_url(&config.server_url)
        .map_err(|e| anyhow::anyhow!("{}: [agent] server_url: {e}", config_path.display()))?;
    let client = Client::new(&config.server_url, config.token.expose_secret());
    let agent = Agent::new(Arc::new(HttpQueue(client)), config.connections);
    tracing::info!(server = %config.server_url, connections = ?agent.connections(), "agent started");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::app::shutdown_signal().await;
        tracing::info!("stopping after the current job");
        let _ = stop_tx.send(true);
    });
    agent
        .run(stop_rx)
        .await
        .map_err(|e| anyhow::anyhow!("the server refused this agent: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
