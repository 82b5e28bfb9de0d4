//! Server-side commands: they read the server config and talk to its database directly.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::app::{App, open_store, redact, shutdown_signal};
use crate::audit::{AuditEvent, ChainError, Checkpoint, Head};
use crate::changes::ChangeHub;
use crate::config::Config;
use crate::config::sqlite_file::{SqliteTarget, sqlite_target};
use crate::domain::Clock;
use crate::domain::Email;
use crate::service::Hoop;
use crate::store::{ChainCheck, Store, TokenSubject, check_audit_chain};
use crate::token::{Operator, Revocation};

/// The config file `hoop serve` uses: the one given, else `./hoop.toml`; `None` runs the demo.
fn serve_config(path: Option<PathBuf>) -> anyhow::Result<Option<(Config, PathBuf)>> {
    match path.or_else(Config::default_path) {
        Some(path) => Ok(Some((Config::load(&path)?, path))),
        None => Ok(None),
    }
}

/// Where a server-side command other than `hoop serve` gets its config.
pub enum ConfigSource {
    /// A config file: the one given (or `$HOOP_CONFIG`), else `./hoop.toml`.
    File(Option<PathBuf>),
    /// The demo that `hoop serve` without a config runs in the current directory.
    Demo,
}

/// The config every other server-side command needs. Without one they refuse: falling back to the
/// demo would let `hoop audit verify` in the wrong folder vouch for an empty, fresh database. The
/// demo's own database is reached only when asked for (`--demo`), and only where it exists.
fn required_config(source: ConfigSource) -> anyhow::Result<(Config, PathBuf)> {
    let path = match source {
        ConfigSource::File(path) => path,
        ConfigSource::Demo => return Ok((crate::demo::existing_config()?, "demo config".into())),
    };
    let path = path.or_else(Config::default_path).with_context(|| {
        let here = std::env::current_dir()
            .map(|dir| dir.join("hoop.toml").display().to_string())
            .unwrap_or_else(|_| "./hoop.toml".into());
        format!(
            "no server config: give --config FILE, set $HOOP_CONFIG, or run where hoop.toml is \
             (looked for {here}); for the demo's database, run with --demo where `hoop serve` ran"
        )
    })?;
    Ok((Config::load(&path)?, path))
}

/// Opens the database of the config from `source`, saying on stderr which config and database it is.
async fn open(source: ConfigSource) -> anyhow::Result<(Config, Arc<dyn Store>)> {
    let (config, path) = required_config(source)?;
    open_with(config, path).await
}

async fn open_with(config: Config, path: PathBuf) -> anyhow::Result<(Config, Arc<dyn Store>)> {
    let store = open_store_of(&config, &path, ChangeHub::new()).await?;
    Ok((config, store))
}

async fn open_store_of(
    config: &Config,
    path: &Path,
    changes: Arc<ChangeHub>,
) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.server.database_url.expose_secret();
    sayln!("config {}, database {}", path.display(), redact(url));
    open_store(url, changes, config.server.audit_key.clone()).await
}

/// The service over the database of the config from `source`, for the commands that act through
/// its use cases (the token commands) without a running server.
async fn open_hoop(source: ConfigSource) -> anyhow::Result<Hoop> {
    let (config, path) = required_config(source)?;
    let changes = ChangeHub::new();
    let store = open_store_of(&config, &path, changes.clone()).await?;
    let webhooks = Arc::new(crate::delivery::Webhooks::new(&config)?);
    Ok(Hoop::new(
        Arc::new(config),
        store,
        changes,
        Clock::system(),
        webhooks,
    ))
}

/// Like [`open`], but refuses a SQLite database that does not exist yet instead of creating it:
/// run from another directory, a relative `sqlite://hoop.db` made a fresh, empty database there,
/// and `hoop audit verify` called it "intact".
async fn open_existing(source: ConfigSource) -> anyhow::Result<(Config, Arc<dyn Store>)> {
    let (config, path) = required_config(source)?;
    let url = config.server.database_url.expose_secret();
    let missing = match sqlite_target(url) {
        _ if !url.starts_with("sqlite:") => false,
        Ok(SqliteTarget::File(path)) => !path.exists(),
        Ok(SqliteTarget::Memory) => false,
        // A temporary database, or one sqlx cannot open: nothing there to read either.
        Ok(SqliteTarget::Temporary) | Err(_) => true,
    };
    if missing {
        let here = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|_| ".".into());
        anyhow::bail!(
            "no database at {} (config {}): a relative path is taken from the current directory, \
             {here}; run where the server runs, or give database_url an absolute path",
            redact(url),
            path.display()
        );
    }
    open_with(config, path).await
}

pub async fn serve(path: Option<PathBuf>, deliveries: bool) -> anyhow::Result<ExitCode> {
    crate::app::protect_secrets_in_memory();
    let (config, origin) = match serve_config(path)? {
        Some((config, path)) => (config, Some(path)),
        None => (crate::demo::config()?, None),
    };
    let demo = origin.is_none();
    tracing::info!(
        config = %origin.as_deref().map(Path::display).map(|p| p.to_string()).unwrap_or_else(|| "demo".into()),
        database = %redact(config.server.database_url.expose_secret()),
        "starting"
    );
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
    if !config
        .users
        .iter()
        .any(|u| u.groups.contains(&config.server.admin_group))
    {
        tracing::warn!(admin_group = %config.server.admin_group, "no user is in the admin group: nobody can act as an admin");
    }
    for lone in config.lone_approvers() {
        tracing::warn!("{lone} (hoop doctor shows this again)");
    }
    if demo {
        crate::demo::prepare_target(&config).await?;
    }
    // The integrations' checks, logged once the server listens (it checks its own public URL).
    let checks = (config.slack.is_some() || !config.webhooks.is_empty()).then(|| config.clone());
    let app = App::build(config, Clock::system()).await?;
    let app = if deliveries {
        app
    } else {
        tracing::warn!(
            "--no-deliveries: this process delivers no webhooks or Slack cards; another process on the same database must"
        );
        app.without_background_deliveries()
    };
    if let Some(config) = checks {
        tokio::spawn(async move {
            for finding in crate::doctor::check(&config).await {
                if finding.ok {
                    tracing::info!(check = %finding.check, "{}", finding.detail);
                } else {
                    tracing::warn!(check = %finding.check, "{} (hoop doctor shows this again)", finding.detail);
                }
            }
        });
    }
    if demo {
        crate::demo::announce(&app.hoop).await?;
    }
    tracing::info!(address = %app.local_addr(), public_url = %app.hoop.public_url(), "hoopbot listening");
    app.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `hoop doctor`: each integration's checks, one line each; exits 1 if any fails.
pub async fn doctor(source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, path) = required_config(source)?;
    outln!("Checking the integrations of {}:", path.display());
    let findings = crate::doctor::check(&config).await;
    for finding in &findings {
        outln!("{finding}");
    }
    Ok(if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn migrate(source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, _) = open(source).await?;
    outln!(
        "migrations applied to {}",
        redact(config.server.database_url.expose_secret())
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn create_token(
    source: ConfigSource,
    email: Option<Email>,
    agent: Option<String>,
    expires: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let subject = match (email, agent) {
        (_, Some(agent)) => TokenSubject::Agent(agent),
        (Some(email), None) => TokenSubject::User(email),
        (None, None) => anyhow::bail!("give an EMAIL or --agent NAME"),
    };
    let hoop = open_hoop(source).await?;
    let token = hoop
        .issue_token(&subject, expires, &Operator::cli())
        .await?;
    outln!("{token}");
    let lasts = match expires {
        Some(d) => format!(
            "It expires at {}.",
            crate::domain::rfc3339(
                crate::domain::Clock::system().now() + d.as_millis() as crate::domain::Millis
            )
        ),
        None => "It lasts until revoked.".into(),
    };
    sayln!(
        "Store this token now: it is not shown again. Its id is {}. {lasts}",
        crate::token::id(&crate::token::digest(&token))
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_tokens(
    source: ConfigSource,
    token: Option<String>,
    id: Option<String>,
    user: Option<Email>,
    agent: Option<String>,
) -> anyhow::Result<ExitCode> {
    let which = match (token, id, user, agent) {
        (Some(token), ..) => Revocation::Token(token),
        (None, Some(id), ..) => Revocation::Id(id),
        (None, None, Some(email), _) => Revocation::Subject(TokenSubject::User(email)),
        (None, None, None, Some(name)) => Revocation::Subject(TokenSubject::Agent(name)),
        (None, None, None, None) => {
            anyhow::bail!("give a TOKEN, --id ID, --user EMAIL or --agent NAME")
        }
    };
    let hoop = open_hoop(source).await?;
    let revoked = hoop.revoke_tokens(which, &Operator::cli()).await?;
    if revoked.is_empty() {
        sayln!("No active token matched; nothing was revoked.");
        return Ok(ExitCode::FAILURE);
    }
    // Running servers trust a token they checked for this long at most: once this command
    // returns, none of them accepts a revoked one.
    tokio::time::sleep(crate::store::TOKEN_TTL).await;
    outln!(
        "Revoked {} token{}.",
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list_tokens(source: ConfigSource) -> anyhow::Result<ExitCode> {
    let hoop = open_hoop(source).await?;
    outln!(
        "{:<12} {:<6} {:<32} {:<25} {:<25} REVOKED",
        "ID",
        "KIND",
        "SUBJECT",
        "CREATED",
        "EXPIRES"
    );
    for token in hoop.tokens().await? {
        let (kind, subject) = match &token.subject {
            TokenSubject::User(email) => ("user", email.as_str()),
            TokenSubject::Agent(name) => ("agent", name.as_str()),
        };
        let revoked = token
            .revoked_at
            .map(crate::domain::rfc3339)
            .unwrap_or_else(|| "-".into());
        let expires = token
            .terms
            .expires_at
            .map(crate::domain::rfc3339)
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<12} {kind:<6} {subject:<32} {:<25} {expires:<25} {revoked}",
            crate::token::id(&token.sha256),
            crate::domain::rfc3339(token.created_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify_audit(
    source: ConfigSource,
    checkpoints: &[Checkpoint],
) -> anyhow::Result<ExitCode> {
    let (config, store) = open_existing(source).await?;
    let (events, head) = match verified_chain(&config, store.as_ref(), checkpoints, false).await? {
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

pub async fn checkpoint_audit(source: ConfigSource) -> anyhow::Result<ExitCode> {
    let (config, store) = open_existing(source).await?;
    let head = match verified_chain(&config, store.as_ref(), &[], true).await? {
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
/// code for a broken chain, having said why. With `vouch_for_unkeyed` (taking a checkpoint), a
/// chain whose only flaw is an unpinned unkeyed part passes, with a warning: the checkpoint taken
/// now is what pins it from then on.
async fn verified_chain(
    config: &Config,
    store: &dyn Store,
    checkpoints: &[Checkpoint],
    vouch_for_unkeyed: bool,
) -> anyhow::Result<Result<(Vec<AuditEvent>, Head), ExitCode>> {
    let key = config.server.audit_key.as_ref().context(
        "no audit key: the chain can only be checked with the key it was written with; \
         set HOOP_AUDIT_KEY (or [server] audit_key)",
    )?;
    let ChainCheck {
        events,
        head,
        verdict,
    } = check_audit_chain(store, key, checkpoints).await?;
    match verdict {
        Ok(()) => Ok(Ok((events, head))),
        Err(ChainError::UnkeyedUnpinned { until }) if vouch_for_unkeyed => {
            sayln!(
                "Warning: events 1 to {until} carry unkeyed hashes, which this checkpoint vouches \
                 for as they are now. That is expected once, right after upgrading a database from \
                 before the chain was keyed; on a database that started keyed it means someone \
                 rewrote the chain: do not keep this checkpoint, restore the database instead."
            );
            Ok(Ok((events, head)))
        }
        Err(e) => {
            sayln!("audit trail BROKEN: {e}");
            Ok(Err(ExitCode::from(2)))
        }
    }
}

pub async fn export_audit(source: ConfigSource) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let (_, store) = open_existing(source).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for event in store.audit_events(None).await? {
        let line = crate::view::AuditEventView::from(event);
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
