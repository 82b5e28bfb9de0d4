//! `hoop requests`: the approver's side from a terminal, and following a request later.

use std::process::ExitCode;

use clap::Subcommand;

use super::escape::terminal_safe;
use super::follow::{Output, finish, follow};
use super::remote;
use crate::domain::GroupStatus;
use crate::http::view::AccessRequestView;

#[derive(Subcommand)]
pub enum RequestsCommand {
    /// List access requests, newest first
    List {
        /// Only this status: pending, approved, rejected, expired, cancelled, running, executed, failed
        #[arg(long)]
        status: Option<String>,
        /// Only this connection
        #[arg(long)]
        connection: Option<String>,
        /// Only this requester (email)
        #[arg(long)]
        requester: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one request: the exact command, its approvals and its result
    Show { id: String },
    /// Approve a request for one of your groups
    Approve {
        id: String,
        /// The approval group you approve for [default: the first pending group you are in]
        #[arg(long)]
        group: Option<String>,
    },
    /// Reject a request; the reason is shown to the requester
    Reject {
        id: String,
        #[arg(long, short = 'r')]
        reason: String,
    },
    /// Withdraw your own pending request
    Cancel { id: String },
    /// Follow a request until it ends and print its result (also for one that already ran)
    Wait {
        id: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
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
                ("connection", connection.unwrap_or_default()),
                ("requester", requester.unwrap_or_default()),
                ("limit", limit.to_string()),
            ];
            let query: Vec<(&str, String)> =
                query.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            let page = client.list(&query).await?;
            out!("{}", terminal_safe(&list_table(&page.items)));
        }
        RequestsCommand::Show { id } => {
            out!("{}", terminal_safe(&describe(&client.get(&id).await?)))
        }
        RequestsCommand::Approve { id, group } => {
            let request = client.approve(&id, group.as_deref()).await?;
            outln!(
                "Approved. Request {} is now {}.",
                request.id,
                request.status
            );
            out!("{}", terminal_safe(&groups(&request)));
        }
        RequestsCommand::Reject { id, reason } => {
            let request = client.reject(&id, &reason).await?;
            outln!("Rejected request {}.", request.id);
        }
        RequestsCommand::Cancel { id } => {
            let request = client.cancel(&id).await?;
            outln!("Cancelled request {}.", request.id);
        }
        RequestsCommand::Wait { id, output } => {
            let request = client.get(&id).await?;
            if request.status.is_terminal() {
                return Ok(finish(&request, output));
            }
            return follow(&client, request, output).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(items: &[AccessRequestView]) -> String {
    if items.is_empty() {
        return "No access requests.\n".into();
    }
    let rows: Vec<[String; 6]> = items
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.to_string(),
                r.connection.clone(),
                r.requester.clone(),
                r.created_at.clone(),
                summary(&r.command),
            ]
        })
        .collect();
    let headers = [
        "ID",
        "STATUS",
        "CONNECTION",
        "REQUESTER",
        "CREATED",
        "COMMAND",
    ];
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The start of a command, cut to fit a list; says how much is not shown (`hoop requests show`
/// prints all of it).
fn summary(command: &str) -> String {
    let first = command.lines().next().unwrap_or("");
    let cut: String = first.chars().take(50).collect();
    let hidden = command.len() - cut.len();
    if hidden == 0 {
        cut
    } else {
        format!("{cut}… (+{hidden} bytes)")
    }
}

fn groups(request: &AccessRequestView) -> String {
    request
        .approval_groups
        .iter()
        .map(|g| match g.status {
            GroupStatus::Approved => format!(
                "  {:<16} approved by {} via {} at {}\n",
                g.group,
                g.decided_by.as_deref().unwrap_or("?"),
                g.via.as_deref().unwrap_or("?"),
                g.decided_at.as_deref().unwrap_or("?")
            ),
            GroupStatus::Pending => format!("  {:<16} waiting\n", g.group),
        })
        .collect()
}

/// Everything about a request, with the exact command last and unabridged.
fn describe(r: &AccessRequestView) -> String {
    let mut out = format!(
        "Request     {}\nURL         {}\nStatus      {}\nConnection  {}\nRequester   {}\nCreated     {}\nExpires     {}\n",
        r.id, r.url, r.status, r.connection, r.requester, r.created_at, r.expires_at
    );
    if let Some(j) = &r.justification {
        out.push_str(&format!("Why         {j}\n"));
    }
    if !r.approval_groups.is_empty() {
        out.push_str("Approvals\n");
        out.push_str(&groups(r));
    }
    if let Some(rejection) = &r.rejection {
        out.push_str(&format!(
            "Rejected    by {} via {}: {}\n",
            rejection.by, rejection.via, rejection.reason
        ));
    }
    if let Some(error) = r.result.as_ref().and_then(|res| res.error.as_ref()) {
        out.push_str(&format!("Error       {error}\n"));
    }
    out.push_str(&format!(
        "SHA-256     {}\nCommand ({} bytes):\n{}\n",
        r.command_sha256,
        r.command.len(),
        r.command
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::summary;

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
