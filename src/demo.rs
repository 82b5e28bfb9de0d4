//! The embedded demo: `hoop serve` with no config file starts a working hoopbot in the current
//! directory, with four users, a SQLite database to run commands against, and fresh tokens.

use crate::config::Config;
use crate::service::Hoop;
use crate::store::TokenSubject;

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

pub fn config() -> Config {
    let mut config = Config::parse(CONFIG, "demo config").expect("the demo config is valid");
    config.apply_env_overrides();
    config
}

/// Creates a fresh token for every demo user and prints how to use them.
pub async fn announce(hoop: &Hoop) -> anyhow::Result<()> {
    let url = &hoop.config.server.public_url;
    let mut lines = vec![
        String::new(),
        format!("hoopbot demo running at {url} (no config file given; data in ./hoop-demo.db)"),
        String::new(),
        "API tokens (new each start; only their hashes are stored):".to_string(),
    ];
    for user in &hoop.config.users {
        let token = crate::token::create(
            hoop.store.as_ref(),
            &TokenSubject::User(user.email.clone()),
            hoop.clock.now(),
        )
        .await?;
        let var = user
            .email
            .split('@')
            .next()
            .unwrap_or("user")
            .to_uppercase();
        let groups = user.groups.iter().cloned().collect::<Vec<_>>().join(", ");
        lines.push(format!(
            "  export {var}={token}   # {} [{groups}]",
            user.email
        ));
    }
    lines.extend([
        String::new(),
        "Try it:".to_string(),
        format!(
            "  curl -s -H \"Authorization: Bearer $ALICE\" -H 'Content-Type: application/json' \\\n    -d '{{\"connection\":\"demo-db\",\"command\":\"SELECT count(*) FROM users\"}}' {url}/api/v1/exec"
        ),
        format!("  curl -s -X POST -H \"Authorization: Bearer $BOB\" {url}/api/v1/access-requests/ID/approve"),
        format!("  curl -s -X POST -H \"Authorization: Bearer $SAM\" {url}/api/v1/access-requests/ID/approve"),
        String::new(),
    ]);
    println!("{}", lines.join("\n"));
    Ok(())
}
