//! Server-side commands: they read the server config and talk to its database directly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::app::{App, shutdown_signal};
use crate::audit::{AuditEvent, Checkpoint, Head};
use crate::changes::ChangeHub;
use crate::config::Config;
use crate::service::Clock;
use crate::store::{self, Store, TokenSelector, TokenSubject};

/// The config to use and whether it is the demo's.
fn load(path: Option<PathBuf>) -> anyhow::Result<(Config, bool)> {
    match path.or_else(Config::default_path) {
        Some(path) => Ok((Config::load(&path)?, false)),
        None => Ok((crate::demo::config()?, true)),
    }
}

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let store = store::connect(
        &config.server.database_url,
        ChangeHub::new(),
        config.server.audit_key.clone(),
    )
    .await?;
    store
        .migrate()
        .await
        .context("cannot run database migrations")?;
    Ok(store)
}

pub async fn serve(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, demo) = load(path)?;
    for conn in config.connections.iter().filter(|c| !c.policy.enabled) {
        tracing::warn!(connection = %conn.name, "access requests are off: commands on this connection run without approval");
    }
    if config.server.audit_key.is_none() {
        anyhow::bail!(
            "no audit key: set audit_key = \"${{HOOP_AUDIT_KEY}}\" under [server] and export \
             HOOP_AUDIT_KEY=$(openssl rand -hex 32). It keys the audit trail's hash chain; keep it \
             outside the database, like any other secret"
        );
    }
    let embedded: Vec<&str> = config
        .embedded_commands()
        .map(|c| c.name.as_str())
        .collect();
    if !embedded.is_empty() {
        tracing::warn!(connections = ?embedded, "command connections run inside the server, as its own user (allow_embedded_command = true); a remote agent is safer");
    }
    if demo {
        crate::demo::prepare_target(&config).await?;
    }
    let app = App::build(config, Clock::system()).await?;
    if demo {
        crate::demo::announce(&app.hoop).await?;
    }
    tracing::info!(address = %app.local_addr(), public_url = %app.hoop.config.server.public_url, "hoopbot listening");
    app.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn migrate(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    open_store(&config).await?;
    outln!(
        "migrations applied to {}",
        crate::app::redact(&config.server.database_url)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn create_token(
    path: Option<PathBuf>,
    email: Option<String>,
    agent: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let subject = match (email, agent) {
        (_, Some(agent)) if agent == crate::config::EMBEDDED_AGENT => anyhow::bail!(
            "the agent name {agent} is reserved for the connections `hoop serve` runs itself; choose another name"
        ),
        (_, Some(agent)) => TokenSubject::Agent(agent),
        (Some(email), None) => {
            let user = config.user(&email).with_context(|| {
                format!("{email} is not a user in the config; add it under [[users]] first")
            })?;
            TokenSubject::User(user.email.clone())
        }
        (None, None) => anyhow::bail!("give an EMAIL or --agent NAME"),
    };
    let store = open_store(&config).await?;
    let token = crate::token::create(store.as_ref(), &subject, Clock::system().now()).await?;
    outln!("{token}");
    sayln!("Store this token now: it is not shown again.");
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_tokens(
    path: Option<PathBuf>,
    token: Option<String>,
    user: Option<String>,
    agent: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let which = match (token, user, agent) {
        (Some(token), _, _) => TokenSelector::Digest(crate::token::digest(&token)),
        (None, Some(email), _) => TokenSelector::Subject(TokenSubject::User(email)),
        (None, None, Some(name)) => TokenSelector::Subject(TokenSubject::Agent(name)),
        (None, None, None) => anyhow::bail!("give a TOKEN, --user EMAIL or --agent NAME"),
    };
    let store = open_store(&config).await?;
    let revoked = store.revoke_tokens(&which, Clock::system().now()).await?;
    if revoked == 0 {
        sayln!("No active token matched; nothing was revoked.");
        return Ok(ExitCode::FAILURE);
    }
    outln!(
        "Revoked {revoked} token{}.",
        if revoked == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list_tokens(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let store = open_store(&config).await?;
    outln!("{:<6} {:<32} {:<25} REVOKED", "KIND", "SUBJECT", "CREATED");
    for token in store.list_tokens().await? {
        let (kind, subject) = match &token.subject {
            TokenSubject::User(email) => ("user", email),
            TokenSubject::Agent(name) => ("agent", name),
        };
        let revoked = token
            .revoked_at
            .map(crate::http::view::time)
            .unwrap_or_else(|| "-".into());
        outln!(
            "{kind:<6} {subject:<32} {:<25} {revoked}",
            crate::http::view::time(token.created_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify_audit(
    path: Option<PathBuf>,
    checkpoints: &[Checkpoint],
) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let store = open_store(&config).await?;
    let (events, head) = match verified_chain(&config, store.as_ref(), checkpoints).await? {
        Ok(chain) => chain,
        Err(broken) => return Ok(broken),
    };
    let pinned = match checkpoints.iter().map(|c| c.seq).max() {
        Some(seq) => format!("; matches checkpoint {seq}"),
        None => String::new(),
    };
    outln!(
        "audit trail intact: {} events, chain head {}{pinned}",
        events.len(),
        short(&head.hash)
    );
    if checkpoints.is_empty() {
        sayln!(
            "Without a checkpoint this cannot show that events at the end were not cut off; \
             keep `hoop audit checkpoint` output elsewhere and pass it with --checkpoint."
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn checkpoint_audit(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, _) = load(path)?;
    let store = open_store(&config).await?;
    let head = match verified_chain(&config, store.as_ref(), &[]).await? {
        Ok((_, head)) => head,
        Err(broken) => return Ok(broken),
    };
    if head.seq == 0 {
        sayln!("The audit trail is empty; there is nothing to checkpoint yet.");
        return Ok(ExitCode::FAILURE);
    }
    outln!(
        "{}",
        Checkpoint {
            seq: head.seq,
            hash: head.hash
        }
    );
    sayln!(
        "Keep this line where the database's writers cannot change it; later, \
         `hoop audit verify --checkpoint SEQ:HASH` proves no event up to it was removed or rewritten."
    );
    Ok(ExitCode::SUCCESS)
}

/// The events and head when the chain verifies (against `checkpoints` too); otherwise the exit
/// code for a broken chain, having said why.
async fn verified_chain(
    config: &Config,
    store: &dyn Store,
    checkpoints: &[Checkpoint],
) -> anyhow::Result<Result<(Vec<AuditEvent>, Head), ExitCode>> {
    let key = config.server.audit_key.as_ref().context(
        "no audit key: the chain can only be checked with the key it was written with; \
         set HOOP_AUDIT_KEY (or [server] audit_key)",
    )?;
    let events = store.audit_events(None).await?;
    let head = store.audit_head().await?;
    match crate::audit::verify(key, &events, &head, checkpoints) {
        Ok(()) => Ok(Ok((events, head))),
        Err(e) => {
            sayln!("audit trail BROKEN: {e}");
            Ok(Err(ExitCode::from(2)))
        }
    }
}

pub async fn export_audit(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let (config, _) = load(path)?;
    let store = open_store(&config).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for event in store.audit_events(None).await? {
        let line = crate::http::view::AuditEventView::from(event);
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
