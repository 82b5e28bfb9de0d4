//! `hoop exec`: submit a command and follow it to its result.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::follow::{Output, RawArg, finish, follow};
use super::remote;
use crate::display::single_line;
use crate::domain::ConnectionName;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  hoop exec prod-db -i \"SELECT count(*) FROM users\"\n  \
    hoop exec prod-db -f migration.sql -j \"TICKET-42\"\n  echo 'uptime' | hoop exec box"
)]
pub struct ExecArgs {
    /// The connection to run on
    connection: ConnectionName,
    /// The command text
    #[arg(
        short = 'i',
        long = "input",
        value_name = "COMMAND",
        conflicts_with = "file"
    )]
    input: Option<String>,
    /// Read the command from FILE
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Why you need to run it (shown to approvers)
    #[arg(short = 'j', long)]
    justification: Option<String>,
    /// Print the request id and URL and exit; resume with `hoop requests wait ID`
    #[arg(long)]
    no_wait: bool,
    /// How to print the outcome
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    #[command(flatten)]
    raw: RawArg,
}

pub async fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let command = read_command(&args)?;
    let client = remote::client()?;
    let request = client
        .submit(
            args.connection.as_str(),
            &command,
            args.justification.as_deref(),
        )
        .await?;
    if args.no_wait {
        outln!(
            "{}\n{}",
            single_line(&request.id),
            single_line(&request.url)
        );
        sayln!(
            "Request {} is {}. Follow it with `hoop requests wait {}`.",
            request.id,
            request.status,
            request.id
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The id on its own, not only inside the URL: it is what `hoop requests` takes.
    sayln!(
        "Request {} is {}.",
        single_line(&request.id),
        request.status
    );
    if request.status.is_terminal() {
        return Ok(finish(&request, args.output, args.raw.raw));
    }
    follow(&client, request, args.output, args.raw.raw).await
}

/// The command from `-i`, `-f` or stdin, exactly as given.
fn read_command(args: &ExecArgs) -> anyhow::Result<String> {
    if let Some(text) = &args.input {
        return Ok(text.clone());
    }
    if let Some(path) = &args.file {
        return std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()));
    }
    if std::io::stdin().is_terminal() {
        anyhow::bail!("give the command with -i \"COMMAND\", -f FILE, or on stdin");
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the command from stdin")?;
    Ok(text)
}
