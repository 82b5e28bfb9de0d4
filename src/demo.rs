//! The embedded demo: `hoop serve` with no config file starts a working hoopbot in the current
//! directory, with four users, a SQLite database to run commands against, and fresh tokens.

use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use secrecy::ExposeSecret;

use crate::audit::AuditKey;
use crate::config::Config;
use crate::service::Hoop;
use crate::store::TokenSubject;
use crate::token::{Operator, Revocation};

/// The demo's configuration. Also a readable example of the config format.
pub const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8009"
public_url = "http://127.0.0.1:8009"
database_url = "sqlite://hoop-demo.db"
admin_group = "admin"

[[users]]
email = "alice@example.com"
groups = ["engineering"]

[[users]]
email = "bob@example.com"
groups = ["dba-team"]

[[users]]
email = "sam@example.com"
groups = ["security"]

[[users]]
email = "root@example.com"
groups = ["admin"]

[[connections]]
name = "demo-db"
type = "sqlite"
url = "sqlite://hoop-demo-target.db"
statement_timeout = "30s"

[connections.access_requests]
enabled = true
approval_groups = ["dba-team", "security"]
require_approval_for = "all"
exempt_groups = ["admin"]
timeout = "30m"
"#;

/// Where the demo keeps its audit key: beside its database, never in it.
const AUDIT_KEY_FILE: &str = "hoop-demo.audit-key";

/// The demo's config, with its audit key (made on first start, then read from its file).
pub fn config() -> anyhow::Result<Config> {
    config_with_key_file(Path::new(AUDIT_KEY_FILE))
}

/// Where the demo keeps its data (relative to the directory it runs in).
const DATABASE_FILE: &str = "hoop-demo.db";

/// The config of a demo that already ran in the current directory, for server-side commands
/// (`hoop audit verify --demo`). Refused where no demo ran: a fresh, empty database would
/// verify as "intact", and a new key would not match the one its chain was written with.
pub fn existing_config() -> anyhow::Result<Config> {
    for file in [DATABASE_FILE, AUDIT_KEY_FILE] {
        if !Path::new(file).exists() {
            let here = std::env::current_dir()
                .map(|dir| dir.display().to_string())
                .unwrap_or_else(|_| ".".into());
            anyhow::bail!(
                "no demo in {here}: {file} is missing; run this where `hoop serve` ran without a config"
            );
        }
    }
    config()
}

/// The demo's config with its audit key kept in `key_file`.
pub fn config_with_key_file(key_file: &Path) -> anyhow::Result<Config> {
    let mut config = Config::parse(CONFIG, "demo config").expect("the demo config is valid");
    config.server.audit_key = Some(audit_key(key_file)?);
    config.apply_env_overrides()?;
    Ok(config)
}

/// Reads the demo's audit key from `path`, creating it (owner-only) with a random key if missing.
fn audit_key(path: &Path) -> anyhow::Result<AuditKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let fresh = hex::encode(bytes);
    // create_new: two demos starting at once must not each write a different key.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => file
            .write_all(fresh.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the demo's audit key {}", path.display()))?;
    AuditKey::new(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The demo's target database: a SQLite file with a `users` table, created on first start.
pub async fn prepare_target(config: &Config) -> anyhow::Result<()> {
    use sqlx::Connection;
    use std::str::FromStr;
    let Some(url) = config
        .connections
        .iter()
        .find(|c| c.name.as_str() == "demo-db")
        .and_then(|c| c.target.url.as_ref())
        .map(|url| url.expose_secret().to_string())
    else {
        return Ok(());
    };
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?.create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::raw_sql(
        "create table if not exists users (
             id integer primary key,
             email text not null,
             status text not null default 'active'
         );
         insert into users (id, email)
             with recursive n(i) as (select 1 union all select i + 1 from n where i < 12345)
             select i, 'user' || i || '@example.com' from n
             where not exists (select 1 from users);",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// Revokes the demo users' earlier tokens and issues each a new one, so only the tokens printed at
/// this start work. Returns (email, token) per user, in config order.
pub async fn fresh_tokens(hoop: &Hoop) -> anyhow::Result<Vec<(String, String)>> {
    let by = Operator::system();
    let mut tokens = Vec::new();
    for user in hoop.users() {
        let subject = TokenSubject::User(user.email.clone());
        hoop.revoke_tokens(Revocation::Subject(subject.clone()), &by)
            .await?;
        let secret = hoop.issue_token(&subject, None, &by).await?;
        tokens.push((user.email.to_string(), secret));
    }
    Ok(tokens)
}

/// Issues fresh tokens for every demo user and prints how to use them.
pub async fn announce(hoop: &Hoop) -> anyhow::Result<()> {
    let url = hoop.public_url();
    let mut lines = vec![
        String::new(),
        format!(
            "hoopbot demo running at {url} (no config file given; data in ./hoop-demo.db, audit key in ./hoop-demo.audit-key)"
        ),
        String::new(),
        "API tokens (new each start, earlier ones revoked; only their hashes are stored):"
            .to_string(),
    ];
    for ((email, token), user) in fresh_tokens(hoop).await?.iter().zip(hoop.users()) {
        let var = email.split('@').next().unwrap_or("user").to_uppercase();
        let groups = user.groups.iter().cloned().collect::<Vec<_>>().join(", ");
        lines.push(format!("  export {var}={token}   # {email} [{groups}]"));
    }
    lines.extend([
        String::new(),
        "Try it (as alice, approved by bob and sam):".to_string(),
        format!("  HOOP_URL={url} HOOP_TOKEN=$ALICE hoop exec demo-db -i \"SELECT count(*) FROM users\""),
        format!("  HOOP_URL={url} HOOP_TOKEN=$BOB hoop requests approve ID"),
        format!("  HOOP_URL={url} HOOP_TOKEN=$SAM hoop requests approve ID"),
        String::new(),
        "or with curl:".to_string(),
        format!(
            "  curl -s -H \"Authorization: Bearer $ALICE\" -H 'Content-Type: application/json' \\\n    -d '{{\"connection\":\"demo-db\",\"command\":\"SELECT count(*) FROM users\"}}' {url}/api/v1/exec"
        ),
        format!("  curl -s -X POST -H \"Authorization: Bearer $BOB\" {url}/api/v1/access-requests/ID/approve"),
        format!("  curl -s -X POST -H \"Authorization: Bearer $SAM\" {url}/api/v1/access-requests/ID/approve"),
        String::new(),
    ]);
    // A closed stdout (say, piped into `head`) must not take the server down with it.
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", lines.join("\n"));
    Ok(())
}
