//! Where the CLI finds the server and its token: `hoop login` stores them in the user's config
//! directory (mode 0600); `HOOP_URL` and `HOOP_TOKEN` override the file.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::client::{Client, check_server_url};

#[derive(Serialize, Deserialize)]
struct Credentials {
    url: String,
    token: String,
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    let dir = dirs::config_dir()
        .context("cannot find your config directory; set HOOP_URL and HOOP_TOKEN instead")?;
    Ok(dir.join("hoop").join("credentials.json"))
}

/// A client for the server the user logged in to.
pub fn client() -> anyhow::Result<Client> {
    let stored: Option<Credentials> = credentials_path()
        .ok()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let url = match std::env::var("HOOP_URL") {
        Ok(url) => Some(("HOOP_URL", url)),
        Err(_) => stored
            .as_ref()
            .map(|c| ("the URL saved by `hoop login`", c.url.clone())),
    };
    let token = std::env::var("HOOP_TOKEN")
        .ok()
        .or_else(|| stored.as_ref().map(|c| c.token.clone()));
    match (url, token) {
        (Some((from, url)), Some(token)) => {
            check_server_url(&url).map_err(|e| anyhow::anyhow!("{from}: {e}"))?;
            Ok(Client::new(&url, &token))
        }
        _ => anyhow::bail!(
            "not logged in: run `hoop login --url URL --token TOKEN`, or set HOOP_URL and HOOP_TOKEN"
        ),
    }
}

/// Checks the token against the server, then stores both for later commands.
pub async fn login(url: &str, token: &str) -> anyhow::Result<()> {
    check_server_url(url).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
    let client = Client::new(url, token);
    let me = client.me().await.context("login failed")?;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let body = serde_json::to_vec_pretty(&Credentials {
        url: client.base_url().to_string(),
        token: token.to_string(),
    })?;
    write_private(&path, &body).with_context(|| format!("cannot write {}", path.display()))?;
    outln!(
        "Logged in to {} as {}. Credentials saved in {}.",
        client.base_url(),
        me["email"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

/// Writes `bytes` to a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    // The mode above only applies to new files; tighten an existing one too.
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)
}

/// `hoop subscribe CODE`: confirms, as the logged-in user, the code `/hoop subscribe` showed in
/// Slack, which links that Slack account to this user.
pub async fn subscribe(code: &str) -> anyhow::Result<std::process::ExitCode> {
    let client = client()?;
    let link = client.confirm_link(code).await?;
    let approval_groups: Vec<String> = link["approval_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect();
    outln!(
        "Linked Slack account {} to {}. {} Your clicks on request cards count as yours.",
        crate::display::single_line(link["account"].as_str().unwrap_or("?")),
        crate::display::single_line(link["email"].as_str().unwrap_or("?")),
        crate::sentences::Words::PLAIN.what_a_link_brings(&approval_groups),
    );
    Ok(std::process::ExitCode::SUCCESS)
}
