//! `hoop requests`: the approver's side from a terminal, and following a request later.

use std::process::ExitCode;

use clap::Subcommand;

use super::follow::{Output, RawArg, finish, follow};
use super::remote;
use crate::display::{self, single_line};
use crate::domain::YouMay;
use crate::domain::{ConnectionName, Email};
use crate::sentences::Words;
use crate::store::DeliveryState;
use crate::view::{AccessRequestView, DeliveryView, GroupViewStatus, MessageView};

#[derive(Subcommand)]
pub enum RequestsCommand {
    /// List access requests, newest first
    List {
        /// Only this status: pending, approved, rejected, expired, cancelled, running, executed, failed
        #[arg(long)]
        status: Option<String>,
        /// Only this connection
        #[arg(long)]
        connection: Option<ConnectionName>,
        /// Only this requester (email)
        #[arg(long)]
        requester: Option<Email>,
        /// How many requests to list (newest first; at most 200)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one request: the exact command, its approvals and its result
    Show {
        /// The request's id
        id: String,
    },
    /// Approve a request for one of your groups
    Approve {
        /// The request's id
        id: String,
        /// The approval group you approve for [default: the first pending group you are in]
        #[arg(long)]
        group: Option<String>,
    },
    /// Reject a request; the reason is shown to the requester
    Reject {
        /// The request's id
        id: String,
        /// Why: shown to the requester and kept in the audit trail
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Withdraw a request: your own, or any as an admin, while pending or approved but not started
    Cancel {
        /// The request's id
        id: String,
    },
    /// Follow a request until it ends and print its result (also for one that already ran)
    Wait {
        /// The request's id
        id: String,
        /// How to print the outcome
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        raw: RawArg,
    },
}

pub async fn run(command: RequestsCommand) -> anyhow::Result<ExitCode> {
    let client = remote::client()?;
    match command {
        RequestsCommand::List {
            status,
            connection,
            requester,
            limit,
        } => {
            let query = [
                ("status", status.unwrap_or_default()),
                (
                    "connection",
                    connection.map(String::from).unwrap_or_default(),
                ),
                ("requester", requester.map(String::from).unwrap_or_default()),
                ("limit", limit.to_string()),
            ];
            let query: Vec<(&str, String)> =
                query.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            let page = client.list(&query).await?;
            out!("{}", list_table(&page.items));
        }
        RequestsCommand::Show { id } => out!("{}", describe(&client.get(&id).await?)),
        RequestsCommand::Approve { id, group } => {
            let me = client.me().await?;
            let request = client.approve(&id, group.as_deref()).await?;
            let me = me["email"].as_str().unwrap_or_default();
            outln!("{}", approved(&request, me));
            out!("{}", groups(&request));
            // Whoever approved by id alone still learns what the command hides.
            for warning in display::command(&request.command).warnings {
                sayln!(
                    "Warning: {warning}; see `hoop requests show {}`",
                    request.id
                );
            }
        }
        RequestsCommand::Reject { id, reason } => {
            let request = client.reject(&id, &reason).await?;
            outln!("Rejected request {}.", single_line(&request.id));
        }
        RequestsCommand::Cancel { id } => {
            let request = client.cancel(&id).await?;
            outln!("Cancelled request {}.", single_line(&request.id));
        }
        RequestsCommand::Wait { id, output, raw } => {
            let request = client.get(&id).await?;
            if request.status.is_terminal() {
                return Ok(finish(&request, output, raw.raw));
            }
            return follow(&client, request, output, raw.raw).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an approval did: which group it counted for, and what the request still needs.
fn approved(request: &AccessRequestView, me: &str) -> String {
    let mine = request
        .approval_groups
        .iter()
        .filter(|g| g.status == GroupViewStatus::Approved && g.decided_by.as_deref() == Some(me))
        .map(|g| single_line(&g.group))
        .collect::<Vec<_>>()
        .join(", ");
    let waiting: Vec<String> = request
        .approval_groups
        .iter()
        .filter(|g| g.status == GroupViewStatus::Pending)
        .map(|g| single_line(&g.group))
        .collect();
    let id = single_line(&request.id);
    let head = if mine.is_empty() {
        format!("Approved request {id}")
    } else {
        format!("Approved request {id} for {mine}")
    };
    if waiting.is_empty() {
        format!("{head}; the request is now {}.", request.status)
    } else {
        format!("{head}; still waiting for {}.", waiting.join(", "))
    }
}

fn list_table(items: &[AccessRequestView]) -> String {
    if items.is_empty() {
        return "No access requests.\n".into();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                single_line(&r.id),
                r.status.to_string(),
                single_line(&r.connection),
                single_line(&r.requester),
                single_line(&r.created_at),
                summary(&r.command),
            ]
        })
        .collect();
    crate::table::columns(
        &[
            "ID",
            "STATUS",
            "CONNECTION",
            "REQUESTER",
            "CREATED",
            "COMMAND",
        ],
        &rows,
    )
}

/// The start of a command, cut to fit a list, hidden characters escaped; says how much is not
/// shown (`hoop requests show` prints all of it) and flags anything suspicious in the rest.
fn summary(command: &str) -> String {
    let first = command.split('\n').next().unwrap_or("");
    let cut: String = first.chars().take(50).collect();
    let hidden = command.len() - cut.len();
    let mut shown = single_line(&cut);
    if hidden > 0 {
        shown.push_str(&format!("… (+{hidden} bytes)"));
    }
    if !display::command(command).warnings.is_empty() {
        shown.push_str(" [see warning: hoop requests show]");
    }
    shown
}

fn groups(request: &AccessRequestView) -> String {
    request
        .approval_groups
        .iter()
        .map(|g| {
            let state = Words::PLAIN.group_state(&g.approval(), request.status);
            let at = g
                .decided_at
                .as_deref()
                .map(|at| format!(" at {}", single_line(at)))
                .unwrap_or_default();
            format!("  {:<16} {state}{at}\n", single_line(&g.group))
        })
        .collect()
}

/// What the reader may do with the request now, as the server's one rule says.
fn you_may(you_may: &YouMay) -> String {
    let mut can: Vec<String> = you_may
        .approve_as
        .iter()
        .map(|g| format!("approve as {}", single_line(g)))
        .collect();
    if you_may.reject {
        can.push("reject".into());
    }
    let mut out = if can.is_empty() {
        "nothing".to_string()
    } else {
        can.join(", ")
    };
    if let Some(why) = &you_may.why_not {
        out.push_str(&format!(" ({})", Words::PLAIN.why_not(why)));
    }
    out
}

/// Where each chat copy of the request went and which version it shows, or why it never can.
fn posted(messages: &[MessageView]) -> String {
    messages
        .iter()
        .map(|m| {
            let state = match &m.gone {
                Some(error) => format!("given up: {}", single_line(error)),
                None => format!("shows v{}, updated at {}", m.version, m.updated_at),
            };
            format!(
                "  {} {}: {state}\n",
                single_line(&m.kind),
                single_line(&m.copy)
            )
        })
        .collect()
}

/// What each destination was told, one line per event and destination, so "my approver got
/// nothing" is answered here: delivered when, or how it failed and when it is tried again.
fn delivered(deliveries: &[DeliveryView]) -> String {
    deliveries
        .iter()
        .map(|d| {
            let event = d.event.strip_prefix("access_request.").unwrap_or(&d.event);
            let status = d
                .last_status
                .map(|s| format!(" HTTP {s}"))
                .unwrap_or_default();
            let outcome = match d.state {
                DeliveryState::Delivered => {
                    format!("delivered at {}", d.delivered_at.as_deref().unwrap_or("?"))
                }
                DeliveryState::Pending if d.attempts == 0 => "queued".to_string(),
                DeliveryState::Pending => format!(
                    "failed{status}, retry at {}",
                    d.next_attempt_at.as_deref().unwrap_or("?")
                ),
                DeliveryState::GivenUp => format!("given up{status}"),
                DeliveryState::Dropped => "dropped: the endpoint was switched off".to_string(),
            };
            let attempts = format!(
                "{} attempt{}",
                d.attempts,
                if d.attempts == 1 { "" } else { "s" }
            );
            let mut line = format!(
                "  {} {} v{} {event}: {outcome} ({attempts})",
                d.kind, d.destination, d.version
            );
            if d.state != DeliveryState::Delivered
                && let Some(error) = &d.last_error
            {
                // Quoted from the receiver: one line, hidden characters shown.
                line.push_str(&format!(": {error}"));
            }
            single_line(&line) + "\n"
        })
        .collect()
}

/// Everything about a request, with the exact command last and unabridged. Every field but the
/// command is one line, so none can pass for another line of this output.
fn describe(r: &AccessRequestView) -> String {
    let one = |text: &str| single_line(text);
    let mut out = format!(
        "Request     {}\nURL         {}\nStatus      {}\nConnection  {}\nRequester   {}\nCreated     {}\nExpires     {}\n",
        one(&r.id),
        one(&r.url),
        r.status,
        one(&r.connection),
        one(&r.requester),
        one(&r.created_at),
        one(&r.expires_at)
    );
    out.push_str(&format!("Summary     {}\n", one(&r.summary)));
    if let Some(may) = &r.you_may {
        out.push_str(&format!("You may     {}\n", you_may(may)));
    }
    if let Some(j) = &r.justification {
        out.push_str(&format!("Why         {}\n", one(j)));
    }
    if !r.approval_groups.is_empty() {
        out.push_str("Approvals\n");
        out.push_str(&groups(r));
    }
    if let Some(rejection) = &r.rejection {
        out.push_str(&format!(
            "Rejected    by {} via {}: {}\n",
            one(&rejection.by),
            one(&rejection.via),
            one(&rejection.reason)
        ));
    }
    if let Some(error) = r.result.as_ref().and_then(|res| res.error.as_ref()) {
        out.push_str(&format!("Error       {}\n", one(error)));
    }
    if let Some(deliveries) = r.deliveries.as_deref().filter(|d| !d.is_empty()) {
        out.push_str("Deliveries\n");
        out.push_str(&delivered(deliveries));
    }
    if let Some(messages) = r.messages.as_deref().filter(|m| !m.is_empty()) {
        out.push_str("Messages\n");
        out.push_str(&posted(messages));
    }
    let command = display::command(&r.command);
    out.push_str(&format!("SHA-256     {}\n", one(&r.command_sha256)));
    for warning in &command.warnings {
        out.push_str(&format!("Warning     {warning}\n"));
    }
    out.push_str(&format!(
        "Command ({} bytes):\n{}\n",
        r.command.len(),
        command.text
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn summaries_are_one_line_and_flag_what_they_leave_out() {
        assert_eq!(
            summary("rm -rf /\r\x1b[2Kecho ok"),
            "rm -rf /\\r\\u{1b}[2Kecho ok [see warning: hoop requests show]"
        );
        assert_eq!(
            summary("SELECT 1;\nSELECT '\u{200b}'"),
            "SELECT 1;… (+13 bytes) [see warning: hoop requests show]"
        );
    }

    #[test]
    fn summaries_say_how_much_they_leave_out() {
        assert_eq!(summary("SELECT 1"), "SELECT 1");
        assert_eq!(summary("SELECT 1;\nSELECT 2"), "SELECT 1;… (+9 bytes)");
        let long = format!("UPDATE t SET x = '{}'", "é".repeat(60));
        let shown = summary(&long);
        assert!(shown.starts_with("UPDATE t SET x = 'éé"));
        let cut: String = long.chars().take(50).collect();
        assert!(shown.ends_with(&format!("… (+{} bytes)", long.len() - cut.len())));
    }
}
