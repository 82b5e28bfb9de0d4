//! `hoop webhooks`: for admins, the configured webhook endpoints, every attempt at one, and a
//! test ping — so "the SIEM got nothing" is answered without reading the server's logs.

use std::process::ExitCode;

use clap::Subcommand;

use super::remote;
use crate::display::single_line;
use crate::table::columns;

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List the configured webhooks: where they point, and how their deliveries stand
    List,
    /// Every attempt at one webhook (deliveries and test pings), newest first
    Deliveries {
        /// The webhook's name, as in the server's config
        name: String,
        /// How many attempts to show (at most 200)
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show the attempts after this cursor (printed at the end of the previous page)
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send a webhook a signed `ping` event now and say what it answered
    Test {
        /// The webhook's name, as in the server's config
        name: String,
    },
}

pub async fn run(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    let client = remote::client()?;
    match command {
        WebhooksCommand::List => {
            let hooks = client.webhooks().await?;
            if hooks.is_empty() {
                outln!("No webhooks are configured ([[webhooks]] in the server's config).");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = hooks
                .iter()
                .map(|h| {
                    vec![
                        single_line(&h.name),
                        h.state.clone(),
                        single_line(&h.url),
                        h.pending.to_string(),
                        h.delivered.to_string(),
                        h.given_up.to_string(),
                        h.events.len().to_string(),
                    ]
                })
                .collect();
            out!(
                "{}",
                columns(
                    &[
                        "NAME",
                        "STATE",
                        "URL",
                        "PENDING",
                        "DELIVERED",
                        "GIVEN UP",
                        "EVENTS"
                    ],
                    &rows
                )
            );
            for hook in hooks.iter().filter(|h| h.state == "disabled") {
                outln!(
                    "{} was switched off at {}: {}. Point its url elsewhere to switch it back on.",
                    single_line(&hook.name),
                    hook.disabled_at.as_deref().unwrap_or("?"),
                    single_line(hook.disabled_reason.as_deref().unwrap_or("?"))
                );
            }
        }
        WebhooksCommand::Deliveries {
            name,
            limit,
            cursor,
        } => {
            let page = client
                .webhook_deliveries(&name, limit, cursor.as_deref())
                .await?;
            if page.items.is_empty() {
                outln!("No attempts at webhook {} yet.", single_line(&name));
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = page
                .items
                .iter()
                .map(|a| {
                    vec![
                        a.at.clone(),
                        a.event.clone(),
                        single_line(a.request_id.as_deref().unwrap_or("-")),
                        a.attempt.to_string(),
                        a.status.map_or("-".into(), |s| s.to_string()),
                        format!("{} ms", a.latency_ms),
                        // Quoted from the receiver: one line, hidden characters shown.
                        single_line(a.error.as_deref().unwrap_or("")),
                    ]
                })
                .collect();
            out!(
                "{}",
                columns(
                    &[
                        "AT", "EVENT", "REQUEST", "ATTEMPT", "STATUS", "LATENCY", "ERROR"
                    ],
                    &rows
                )
            );
            if let Some(next) = page.next_cursor {
                outln!(
                    "More: hoop webhooks deliveries {} --cursor {next}",
                    single_line(&name)
                );
            }
        }
        WebhooksCommand::Test { name } => {
            let ping = client.test_webhook(&name).await?;
            let status = ping
                .status
                .map(|s| format!("HTTP {s}, "))
                .unwrap_or_default();
            if ping.delivered {
                outln!(
                    "Ping to {} delivered ({status}{} ms, webhook-id {}).",
                    single_line(&ping.webhook),
                    ping.latency_ms,
                    single_line(&ping.webhook_id)
                );
            } else {
                sayln!(
                    "Ping to {} failed ({status}{} ms): {}",
                    single_line(&ping.webhook),
                    ping.latency_ms,
                    single_line(ping.error.as_deref().unwrap_or("no answer"))
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
