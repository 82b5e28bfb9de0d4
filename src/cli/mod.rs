//! The `hoop` command line: parse, dispatch, and turn errors into a message and an exit code.

// Terminal output that ignores a closed stdout or stderr (`hoop requests list | head -1`, a closed
// terminal): nothing is gained by panicking over a message nobody can read.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod agent;
mod exec;
mod follow;
mod remote;
mod requests;
mod server;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hoop",
    version,
    about = "Hold risky commands until the right people approve them, then run them once.",
    long_about = "Hold risky commands until the right people approve them, then run them once.\n\n\
        Start with `hoop serve` (no config file: a demo on 127.0.0.1:8009)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a command for a connection and wait for approval and its result
    Exec(exec::ExecArgs),
    /// Approve, reject, list and follow access requests
    #[command(subcommand)]
    Requests(requests::RequestsCommand),
    /// List webhooks, see every delivery attempt, send a test ping (admins)
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Link your Slack account: confirm the code `/hoop subscribe` showed you in Slack
    Subscribe {
        /// The code, like ABCD-EFGH (valid 10 minutes, once)
        code: String,
    },
    /// Sign in to a server for later commands: in your browser, or with an API token
    ///
    /// Without --token, opens the server's sign-in page in your browser (single sign-on, where
    /// the server has it) and receives a token that expires on a loopback port, as `gh auth
    /// login` does. Credentials are stored in your config directory, readable by you only.
    Login {
        /// The server, e.g. https://hoop.company.com
        #[arg(long)]
        url: String,
        /// Your API token (from `hoop token create EMAIL`) instead of the browser
        #[arg(long)]
        token: Option<String>,
        /// Print the sign-in page's address instead of opening a browser
        #[arg(long, conflicts_with = "token")]
        no_browser: bool,
    },
    /// Run a connection agent: dials out to the server and runs approved jobs
    Agent {
        /// Agent config file
        #[arg(long, short = 'c', default_value = "agent.toml")]
        config: PathBuf,
    },
    /// Run the server (API, sweeper, embedded agent). Without a config file, runs the demo.
    Serve(ServeArgs),
    /// Check the configured integrations (Slack, webhooks) from here and say what to fix
    ///
    /// Exits 1 if a check fails. `serve` runs the same checks at start and logs them.
    Doctor(ConfigArg),
    /// Apply database migrations and exit (`serve` also does this at start).
    Migrate(ConfigArg),
    /// Manage API and agent tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check or export the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Server config file [default: ./hoop.toml if present, else the demo config]
    #[arg(long, short = 'c', env = "HOOP_CONFIG")]
    config: Option<PathBuf>,
    /// Deliver nothing (webhooks, Slack cards) from this process: for a replica that serves
    /// requests beside others, on the same Postgres, that deliver
    #[arg(long)]
    no_deliveries: bool,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Server config file [default: ./hoop.toml; required, never the demo's]
    #[arg(long, short = 'c', env = "HOOP_CONFIG")]
    config: Option<PathBuf>,
    /// Use the demo's database and audit key in the current directory (where `hoop serve` ran
    /// without a config) instead of a config file
    #[arg(long, conflicts_with = "config")]
    demo: bool,
}

impl ConfigArg {
    fn source(self) -> server::ConfigSource {
        if self.demo {
            server::ConfigSource::Demo
        } else {
            server::ConfigSource::File(self.config)
        }
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once. Only its SHA-256 is stored.
    Create {
        /// The user (email, as in the config) the token acts as
        #[arg(required_unless_present = "agent", conflicts_with = "agent")]
        email: Option<crate::domain::Email>,
        /// Create a token for the connection agent NAME instead
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// Make the token stop working after this long (like 12h, 30d); without it, a token
        /// lasts until revoked
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires: Option<std::time::Duration>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke one token, or every token of a user or agent. Takes effect on the next call.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["token", "id", "user", "agent"])))]
    Revoke {
        /// The token itself
        token: Option<String>,
        /// The token with this id (the ID column of `hoop token list`, or a longer prefix of its
        /// SHA-256)
        #[arg(long, value_name = "ID", conflicts_with_all = ["user", "agent"])]
        id: Option<String>,
        /// Revoke every token of this user
        #[arg(long, value_name = "EMAIL")]
        user: Option<crate::domain::Email>,
        /// Revoke every token of this agent
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List issued tokens: id, whose, when, whether revoked (never the secrets).
    List(ConfigArg),
}

/// A token's lifetime: a positive duration like `30d`.
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{text:?} is not a duration like 12h or 30d ({e})")),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit trail's keyed hash chain; exits 2 if any event was edited, forged, deleted
    /// or reordered, or if the chain no longer reaches a checkpoint you kept.
    Verify {
        /// A checkpoint printed earlier by `hoop audit checkpoint` (SEQ:HASH); proves nothing up to
        /// it was removed or rewritten, including a cut-off tail. Repeatable.
        #[arg(long, value_name = "SEQ:HASH")]
        checkpoint: Vec<crate::audit::Checkpoint>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Verify the chain and print its head as SEQ:HASH, to keep somewhere the database's writers
    /// cannot reach (a ticket, another system's log).
    Checkpoint(ConfigArg),
    /// Write every audit event as JSON lines to stdout.
    Export(ConfigArg),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            sayln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Requests(command) => requests::run(command).await,
            Command::Webhooks(command) => webhooks::run(command).await,
            Command::Subscribe { code } => remote::subscribe(&code).await,
            Command::Login {
                url,
                token: Some(token),
                ..
            } => remote::login(&url, &token)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Login {
                url,
                token: None,
                no_browser,
            } => remote::login_in_browser(&url, !no_browser)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Agent { config } => agent::run(&config).await,
            Command::Serve(c) => server::serve(c.config, !c.no_deliveries).await,
            Command::Migrate(c) => server::migrate(c.source()).await,
            Command::Doctor(c) => server::doctor(c.source()).await,
            Command::Token(TokenCommand::Create {
                email,
                agent,
                expires,
                config,
            }) => server::create_token(config.source(), email, agent, expires).await,
            Command::Token(TokenCommand::Revoke {
                token,
                id,
                user,
                agent,
                config,
            }) => server::revoke_tokens(config.source(), token, id, user, agent).await,
            Command::Token(TokenCommand::List(c)) => server::list_tokens(c.source()).await,
            Command::Audit(AuditCommand::Verify { checkpoint, config }) => {
                server::verify_audit(config.source(), &checkpoint).await
            }
            Command::Audit(AuditCommand::Checkpoint(c)) => {
                server::checkpoint_audit(c.source()).await
            }
            Command::Audit(AuditCommand::Export(c)) => server::export_audit(c.source()).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // Errors quote the server and other users (names, reasons): one line, shown inert.
            sayln!("error: {}", crate::display::single_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours are for people at a terminal; a log file gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| LogWriter)
        .try_init();
}

/// Stderr for log lines, where a failed write is a lost line, never a stopped process. With a
/// plain stderr writer, tracing reports a failed write with `eprintln!`, which panics on the same
/// closed stderr: `hoop agent 2>&1 | tee agent.log` died on its next log line once `tee` ended,
/// and the job it was running was never reported.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
