//! `hoop serve` as a library: build the application from a config, then run it until shutdown.
//! Tests build it on `127.0.0.1:0` and talk to a real server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::agent::{Agent, LocalQueue};
use crate::changes::ChangeHub;
use crate::config::{Config, EMBEDDED_AGENT};
use crate::service::{Clock, Hoop};
use crate::store;

/// How often this replica looks for overdue requests and lost jobs. Any replica may do it; the
/// compare-and-set makes sure each request moves once.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct App {
    pub hoop: Hoop,
    listener: TcpListener,
    sweep_interval: Option<Duration>,
    embedded_agent: bool,
}

impl App {
    /// Connects the store, runs migrations and binds the listener.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<App> {
        let changes = ChangeHub::new();
        let store = store::connect(
            &config.server.database_url,
            changes.clone(),
            config.server.audit_key.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                redact(&config.server.database_url)
            )
        })?;
        store
            .migrate()
            .await
            .context("cannot run database migrations")?;
        refuse_own_database(&config)?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let hoop = Hoop {
            config: Arc::new(config),
            store,
            changes,
            clock,
        };
        let skew = hoop
            .clock_skew()
            .await
            .context("cannot read the database's clock")?;
        if let Some(warning) = skew_warning(skew) {
            tracing::warn!("{warning}");
        }
        Ok(App {
            hoop,
            listener,
            sweep_interval: Some(SWEEP_INTERVAL),
            embedded_agent: true,
        })
    }

    /// Without background sweeps, tests drive expiry step by step with [`Hoop::sweep`].
    pub fn without_background_sweeps(mut self) -> App {
        self.sweep_interval = None;
        self
    }

    /// The address the server listens on (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Without the in-process agent, tests drive embedded jobs themselves.
    pub fn without_embedded_agent(mut self) -> App {
        self.embedded_agent = false;
        self
    }

    /// Serves HTTP and runs the background workers until `shutdown` completes, then drains
    /// in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let sweeper = self
            .sweep_interval
            .map(|every| tokio::spawn(sweep_forever(self.hoop.clone(), every, stop_rx.clone())));
        let agent = self
            .embedded_agent
            .then(|| embedded_agent(&self.hoop))
            .flatten()
            .map(|agent| {
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = agent.run(stop).await {
                        tracing::error!(error = %e, "embedded agent stopped");
                    }
                })
            });
        let router = crate::http::router(self.hoop.clone());
        let changes = self.hoop.changes.clone();
        let server = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: answering long polls, finishing in-flight requests");
            let _ = stop_tx.send(true);
            changes.close();
        });
        server.await.context("server error")?;
        for worker in sweeper.into_iter().chain(agent) {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// Beyond this, a replica's clock and the database's are far enough apart to say so.
const MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// What to say when this machine's clock is `skew` ms off the database's, if anything.
fn skew_warning(skew: i64) -> Option<String> {
    (skew.abs() > MAX_CLOCK_SKEW_MS).then(|| {
        format!(
            "this machine's clock is {:.1}s {} the database's; deadlines, leases and decision times \
             follow the database's clock, but check this machine's time synchronisation (NTP)",
            skew.unsigned_abs() as f64 / 1000.0,
            if skew > 0 { "ahead of" } else { "behind" }
        )
    })
}

/// Refuses a SQLite connection whose file is this server's own database — by device and inode, so
/// another path, a symlink or a hard link to it is caught too. A command approved on it could
/// otherwise rewrite tokens, requests and the audit trail.
fn refuse_own_database(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(own) = sqlite_file(&config.server.database_url) else {
        return Ok(());
    };
    let own = std::fs::metadata(&own)
        .with_context(|| format!("cannot read the database file {}", own.display()))?;
    for connection in &config.connections {
        let file = match (&connection.kind, &connection.target.url) {
            (crate::config::ConnectionType::Sqlite, Some(url)) => sqlite_file(url),
            _ => None,
        };
        if let Some(meta) = file.and_then(|f| std::fs::metadata(f).ok())
            && (meta.dev(), meta.ino()) == (own.dev(), own.ino())
        {
            anyhow::bail!(
                "connection {} points at hoopbot's own database file; an approved command could \
                 rewrite its tokens and audit trail. Point it at another database",
                connection.name
            );
        }
    }
    Ok(())
}

/// The file a `sqlite:` URL names, if it names one (not an in-memory database).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    (!file.as_os_str().is_empty() && file != std::path::Path::new(":memory:"))
        .then(|| file.to_path_buf())
}

/// The agent for connections this server runs itself (`agent = "embedded"`), if it has any.
fn embedded_agent(hoop: &Hoop) -> Option<Agent> {
    let targets: Vec<_> = hoop
        .config
        .connections
        .iter()
        .filter(|c| c.agent.as_deref() == Some(EMBEDDED_AGENT))
        .map(|c| (c.name.clone(), c.target.clone()))
        .collect();
    if targets.is_empty() {
        return None;
    }
    let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    tracing::info!(connections = ?names, "running embedded connections in-process");
    Some(Agent::new(Arc::new(LocalQueue(hoop.clone())), targets))
}

async fn sweep_forever(hoop: Hoop, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = hoop.sweep().await {
            tracing::warn!(error = %e, "sweep failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::skew_warning;

    #[test]
    fn a_clock_more_than_two_seconds_off_is_worth_a_warning() {
        assert_eq!(skew_warning(1_999), None);
        assert_eq!(skew_warning(-2_000), None);
        let behind = skew_warning(-30_000).unwrap();
        assert!(
            behind.starts_with("this machine's clock is 30.0s behind the database's"),
            "{behind}"
        );
        let ahead = skew_warning(40_500).unwrap();
        assert!(
            ahead.starts_with("this machine's clock is 40.5s ahead of the database's"),
            "{ahead}"
        );
    }
}
