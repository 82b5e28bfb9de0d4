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
    let path = save(client.base_url(), token)?;
    outln!(
        "Logged in to {} as {}. Credentials saved in {}.",
        client.base_url(),
        crate::display::single_line(me["email"].as_str().unwrap_or("?")),
        path.display()
    );
    Ok(())
}

/// How long `hoop login` waits for the browser.
const BROWSER_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Signs in through the browser: listens on a loopback port, has the browser open the server's
/// sign-in page (single sign-on, or a token), receives a one-time code on the port once the
/// person allows it there, and redeems it, with a secret only this process knows, for a token
/// that expires. Then stores it as [`login`] does.
pub async fn login_in_browser(url: &str, open: bool) -> anyhow::Result<()> {
    use base64::Engine;
    use sha2::Digest;
    check_server_url(url).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on a loopback port for the browser's answer")?;
    let port = listener.local_addr()?.port();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(rand::random::<[u8; 32]>());
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let state = hex::encode(rand::random::<[u8; 16]>());
    let client = Client::new(url, "");
    let page = format!(
        "{}/login/cli?{}",
        client.base_url(),
        serde_urlencoded::to_string([
            ("port", port.to_string()),
            ("challenge", challenge),
            ("state", state.clone()),
        ])?
    );
    sayln!("To sign in, open this page in your browser:\n\n  {page}\n");
    if open && open_browser(&page) {
        sayln!("(Opened it in your browser.)");
    }
    sayln!("Waiting for the browser… (Ctrl-C to stop)");
    let code = tokio::time::timeout(BROWSER_WAIT, receive_code(listener, state))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from the browser in {}; run `hoop login` again",
                humantime::format_duration(BROWSER_WAIT)
            )
        })??;
    let granted = client
        .cli_token(&code, &verifier)
        .await
        .context("login failed")?;
    let token = granted["token"]
        .as_str()
        .context("login failed: the server sent no token")?;
    let path = save(client.base_url(), token)?;
    outln!(
        "Logged in to {} as {} until {}. Credentials saved in {}.",
        client.base_url(),
        crate::display::single_line(granted["email"].as_str().unwrap_or("?")),
        crate::display::single_line(granted["expires_at"].as_str().unwrap_or("?")),
        path.display()
    );
    Ok(())
}

/// Opens `page` in the person's browser (`$BROWSER`, else the system's opener); whether it could.
fn open_browser(page: &str) -> bool {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty());
    let opener = opener.unwrap_or_else(|| {
        if cfg!(target_os = "macos") {
            "open".into()
        } else {
            "xdg-open".into()
        }
    });
    std::process::Command::new(opener)
        .arg(page)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
}

/// Serves the loopback port until the browser arrives with this login's `state` and a code.
/// Anything else (another state: not this login's) is answered and ignored.
async fn receive_code(listener: tokio::net::TcpListener, state: String) -> anyhow::Result<String> {
    use axum::extract::Query;
    use axum::response::Html;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |Query(back): Query<Callback>| {
            let (tx, state) = (tx.clone(), state.clone());
            async move {
                match (back.code, back.state) {
                    (Some(code), Some(s)) if s == state => {
                        let _ = tx.send(code).await;
                        Html("<!doctype html><title>hoop login</title><p>Signed in. You can close this tab and go back to the terminal.</p>")
                    }
                    _ => Html("<!doctype html><title>hoop login</title><p>This is not the sign-in this <code>hoop login</code> started; nothing was done.</p>"),
                }
            }
        }),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let code = rx.recv().await.context("the browser's answer was lost")?;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(code)
}

/// Stores the server's URL and a token for later commands, readable by the user only.
fn save(url: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let body = serde_json::to_vec_pretty(&Credentials {
        url: url.to_string(),
        token: token.to_string(),
    })?;
    write_private(&path, &body).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
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
