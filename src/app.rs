//! `hoop serve` as a library: build the application from a config, then run it until shutdown.
//! Tests build it on `127.0.0.1:0` and talk to a real server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::agent::{Agent, LocalQueue};
use crate::audit::AuditKey;
use crate::changes::ChangeHub;
use crate::config::sqlite_file::{FileId, SqliteTarget, sqlite_target};
use crate::config::{Config, EMBEDDED_AGENT};
use crate::delivery::{DeliveryClock, Notifier, Ports, Webhooks, Worker};
use crate::domain::{Clock, Millis};
use crate::service::Hoop;
use crate::slack::{Slack, SlackNotifier};
use crate::store::{self, Store, StoreResult};

/// How often this replica looks for overdue requests and lost jobs. Any replica may do it; the
/// compare-and-set makes sure each request moves once.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The HTTP server's read buffer, which bounds a request head: well above
/// [`crate::http::MAX_HEADER_BYTES`], so that oversized heads get our JSON 431 rather than the
/// HTTP library's bare one.
const HEAD_BUFFER_BYTES: usize = 1024 * 1024;

pub struct App {
    pub hoop: Hoop,
    /// The config the service was built from; the HTTP server and the embedded agent take their
    /// settings from it.
    config: Arc<Config>,
    listener: TcpListener,
    sweep_interval: Option<Duration>,
    embedded_agent: bool,
    deliveries: bool,
    /// This replica's delivery worker, which [`App::run`] runs unless told not to.
    worker: Arc<Worker>,
    /// The Slack app, when `[slack]` is configured.
    slack: Option<Arc<Slack>>,
}

impl App {
    /// Connects the store, runs migrations and binds the listener.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<App> {
        let changes = ChangeHub::new();
        let store = open_store(
            config.server.database_url.expose_secret(),
            changes.clone(),
            config.server.audit_key.clone(),
        )
        .await?;
        refuse_own_database(&config).await?;
        if let Some(key) = &config.server.audit_key {
            refuse_another_audit_key(store.as_ref(), key).await?;
        }
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let config = Arc::new(config);
        let webhooks = Arc::new(Webhooks::new(&config)?);
        let hoop = Hoop::new(
            config.clone(),
            store.clone(),
            changes.clone(),
            clock.clone(),
            webhooks.clone(),
        );
        let worker = Arc::new(delivery_worker(
            &hoop,
            &config,
            delivery_ports(store, changes, clock),
            webhooks,
        )?);
        // Before any request is served: a destination receives the events from its first start on.
        worker
            .start()
            .await
            .context("cannot record the configured webhooks")?;
        let skew = hoop
            .clock_skew()
            .await
            .context("cannot read the database's clock")?;
        if let Some(warning) = skew_warning(skew) {
            tracing::warn!("{warning}");
        }
        let slack = config
            .slack
            .clone()
            .map(|slack| Slack::new(hoop.clone(), slack))
            .transpose()
            .context("cannot set up the Slack client")?;
        Ok(App {
            hoop,
            config,
            listener,
            sweep_interval: Some(SWEEP_INTERVAL),
            embedded_agent: true,
            deliveries: true,
            worker,
            slack,
        })
    }

    /// This replica's delivery worker; tests step it with [`Worker::deliver_next`].
    pub fn delivery_worker(&self) -> Arc<Worker> {
        self.worker.clone()
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

    /// Without the delivery worker running, tests drive deliveries step by step with
    /// [`Worker::deliver_next`] (see [`App::delivery_worker`]).
    pub fn without_background_deliveries(mut self) -> App {
        self.deliveries = false;
        self
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
        // Started before the first request is served, so every change a waiter could miss
        // comes after the poll's starting point.
        let change_poll = tokio::spawn(
            self.hoop
                .change_poll(stop_rx.clone())
                .await
                .context("cannot read the latest change")?,
        );
        let agent = self
            .embedded_agent
            .then(|| embedded_agent(&self.config, &self.hoop))
            .flatten()
            .map(|agent| {
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = agent.run(stop).await {
                        tracing::error!(error = %e, "embedded agent stopped");
                    }
                })
            });
        let deliveries = self.deliveries.then(|| {
            for hook in &self.config.webhooks {
                tracing::info!(
                    webhook = %hook.name,
                    host = hook.url.host_str().unwrap_or_default(),
                    events = hook.events.len(),
                    allow_private = hook.allow_private,
                    "delivering events to webhook"
                );
            }
            tokio::spawn(self.worker.clone().run(stop_rx.clone()))
        });
        // Which workspace the bot token belongs to, learnt now so that no request from Slack
        // waits for it (a request waits at most `slack::WORKSPACE_WAIT`, then is refused).
        if let Some(slack) = self.slack.clone() {
            tokio::spawn(async move {
                if let Err(e) = slack.learn_workspace().await {
                    tracing::warn!(error = %e, "cannot learn the Slack bot token's workspace yet; the next request from Slack asks again");
                }
            });
        }
        // Socket Mode: Slack's events over a socket hoopbot opens, when an app token is set.
        let socket_mode = self
            .slack
            .clone()
            .filter(|slack| slack.config().socket_mode())
            .map(|slack| {
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::slack::socket_mode::run(slack, stop).await {
                        tracing::error!(error = %e, "Slack Socket Mode stopped");
                    }
                })
            });
        let server = &self.config.server;
        let router = crate::http::router(self.hoop.clone(), &self.config, self.slack.clone())?;
        let changes = self.hoop.changes.clone();
        let (header_read_timeout, max_connections) =
            (server.header_read_timeout, server.max_connections);
        serve(
            self.listener,
            router,
            header_read_timeout,
            max_connections,
            async move {
                shutdown.await;
                tracing::info!("shutting down: answering long polls, finishing in-flight requests");
                let _ = stop_tx.send(true);
                changes.close();
            },
        )
        .await;
        for worker in sweeper
            .into_iter()
            .chain(agent)
            .chain(deliveries)
            .chain(socket_mode)
            .chain([change_poll])
        {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// This replica's delivery worker, with a notifier for every configured kind of destination:
/// webhooks, and Slack's cards when `[slack]` is configured.
fn delivery_worker(
    hoop: &Hoop,
    config: &Arc<Config>,
    ports: Ports,
    webhooks: Arc<Webhooks>,
) -> anyhow::Result<Worker> {
    let mut notifiers: Vec<Arc<dyn Notifier>> = vec![webhooks];
    if let Some(slack) = SlackNotifier::new(hoop.clone(), config.clone(), hoop.clock.clone())
        .context("cannot set up Slack's notifier")?
    {
        notifiers.push(Arc::new(slack));
    }
    Ok(Worker::new(ports, notifiers))
}

/// What a delivery worker works with: `store`'s delivery tables, its clock (the database's on
/// Postgres, read through `clock`), and the wake-ups of `changes`.
pub fn delivery_ports(store: Arc<dyn Store>, changes: Arc<ChangeHub>, clock: Clock) -> Ports {
    Ports {
        store: store.clone(),
        clock: Arc::new(StoreClock { store, clock }),
        changes,
    }
}

/// The delivery worker's clock: the store's, which is the database's on Postgres.
struct StoreClock {
    store: Arc<dyn Store>,
    clock: Clock,
}

#[async_trait::async_trait]
impl DeliveryClock for StoreClock {
    async fn now(&self) -> StoreResult<Millis> {
        self.store.now(&self.clock).await
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting and waits for the
/// open connections: requests in flight finish, idle connections close. A client slower than the
/// header timeout is disconnected (the body timeout is applied where bodies are read, see
/// `http::extract`), and at most `max_connections` are served at once.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(HEAD_BUFFER_BYTES)
        // Above hyper's 100, for the same reason as the buffer: the size check answers in JSON.
        .max_headers(1000);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: not a reason to stop serving.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Handlers that count by address (wrong link codes) read the peer from the request.
        let router = tower::Layer::layer(
            &axum::Extension(axum::extract::ConnectInfo(peer)),
            router.clone(),
        );
        let service = hyper_util::service::TowerToHyperService::new(router);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
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

/// Refuses to serve with an audit key other than the one the chain was written with: every event
/// appended after it would make `hoop audit verify` report the trail as tampered with.
async fn refuse_another_audit_key(
    store: &dyn crate::store::Store,
    key: &crate::audit::AuditKey,
) -> anyhow::Result<()> {
    let Some(last) = store.last_audit_event().await? else {
        return Ok(());
    };
    let head = store.audit_head().await?;
    anyhow::ensure!(
        crate::audit::written_with(key, &last, &head),
        "the audit key is not the one this database's audit trail was written with (its last \
         event, {}, does not verify with it): check HOOP_AUDIT_KEY or [server] audit_key, or the \
         database. Serving with it would make every new event look forged",
        last.seq
    );
    Ok(())
}

/// Refuses a SQLite connection whose file is this server's own database — by device and inode, so
/// another path, a symlink or a hard link to it is caught too. A command approved on it could
/// otherwise rewrite tokens, requests and the audit trail. The files are examined, never opened
/// (see [`sqlite_file`](crate::config::sqlite_file)), and a connection whose file cannot be
/// examined is refused as well: it could be this one.
async fn refuse_own_database(config: &Config) -> anyhow::Result<()> {
    let url = config.server.database_url.expose_secret();
    if !url.starts_with("sqlite:") {
        return Ok(());
    }
    let SqliteTarget::File(path) = sqlite_target(url).map_err(anyhow::Error::msg)? else {
        return Ok(());
    };
    let own = FileId::of(&path)
        .with_context(|| format!("cannot examine the database file {}", path.display()))?
        .with_context(|| format!("the database file {} is gone", path.display()))?;
    for connection in &config.connections {
        if let (crate::config::ConnectionType::Sqlite, Some(url)) =
            (&connection.kind, &connection.target.url)
        {
            own_database_refusal(url.expose_secret(), own)
                .map_err(|why| anyhow::anyhow!("connection {}{why}", connection.name))?;
        }
    }
    Ok(())
}

/// Why a SQLite connection on `url` may not run beside the database file `own` (the rest of a
/// sentence that starts with the connection's name), or `Ok` when its file is another one, or
/// none. Fails closed: a URL whose file cannot be told, or a file that cannot be examined, is
/// refused.
fn own_database_refusal(url: &str, own: FileId) -> Result<(), String> {
    let path = match sqlite_target(url) {
        Ok(SqliteTarget::File(path)) => path,
        Ok(SqliteTarget::Memory | SqliteTarget::Temporary) => return Ok(()),
        Err(why) => {
            return Err(format!(
                ": cannot tell which file its url opens ({why}); fix the url"
            ));
        }
    };
    match FileId::of(&path) {
        Ok(Some(id)) if id == own => Err(" points at hoopbot's own database file; an approved \
             command could rewrite its tokens and audit trail. Point it at another database"
            .into()),
        // No file there (yet): it is not this database, which exists.
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            ": cannot examine its database file {} ({e}), so cannot rule out that it is \
             hoopbot's own; fix the path or its permissions",
            path.display()
        )),
    }
}

/// The agent for connections this server runs itself (`agent = "embedded"`), if it has any.
fn embedded_agent(config: &Config, hoop: &Hoop) -> Option<Agent> {
    let targets: Vec<_> = config
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

/// Connects to hoopbot's database and brings its schema up to date, with errors that say what is
/// wrong in a line (a missing database, a server that does not answer) and never the password.
pub async fn open_store(
    url: &str,
    changes: Arc<ChangeHub>,
    audit_key: Option<AuditKey>,
) -> anyhow::Result<Arc<dyn Store>> {
    let store = match store::connect(url, changes, audit_key).await {
        Ok(store) => store,
        Err(e) => return Err(connect_error(url, e).await),
    };
    store
        .migrate()
        .await
        .with_context(|| format!("cannot run database migrations on {}", redact(url)))?;
    Ok(store)
}

/// Says why the database at `url` could not be opened, naming the Postgres host and port when the
/// driver's own message would not (or would read like a line of the config file).
async fn connect_error(url: &str, error: anyhow::Error) -> anyhow::Error {
    let redacted = redact(url);
    let postgres = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .ok()
        .filter(|_| url.starts_with("postgres"));
    let (Some(options), Some(cause)) = (postgres, error.downcast_ref::<sqlx::Error>()) else {
        return error.context(format!("cannot open database {redacted}"));
    };
    let server = format!("{}:{}", options.get_host(), options.get_port());
    match cause {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or(options.get_username());
            anyhow::anyhow!(
                "database {name:?} does not exist on {server}; create it (createdb {name}) or fix database_url ({redacted})"
            )
        }
        sqlx::Error::Database(db) => {
            anyhow::anyhow!(
                "Postgres at {server} refused: {} ({redacted})",
                db.message()
            )
        }
        sqlx::Error::Io(io) => {
            anyhow::anyhow!("cannot reach Postgres at {server}: {io} ({redacted})")
        }
        sqlx::Error::PoolTimedOut => {
            // The pool retried until its timeout; one plain connection attempt says why.
            let host = options.get_host();
            let reason = match tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect((host, options.get_port())),
            )
            .await
            {
                Ok(Err(e)) if !host.starts_with('/') => e.to_string(),
                _ => "no answer in time".to_string(),
            };
            anyhow::anyhow!("cannot reach Postgres at {server}: {reason} ({redacted})")
        }
        _ => error.context(format!("cannot open database {redacted}")),
    }
}

/// A database URL without its secrets, for messages: the password in its userinfo and the value of
/// any query parameter that carries a credential (`password=`, `sslpassword=`, `token=`, …). A
/// parameter's name is judged as the drivers read it, percent- and form-decoded: they take
/// `pass%77ord=` for `password=`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| redacted_param(param).unwrap_or_else(|| param.to_string()))
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// What to show instead of one `key=value` query parameter that carries a credential, or `None`
/// when it carries none. The key is judged decoded, as the drivers decode it (`url`'s
/// `query_pairs`), and shown as written; a parameter that does not decode, or whose decoded key
/// holds an `=` (and so perhaps the value), is hidden whole.
fn redacted_param(param: &str) -> Option<String> {
    let decoded = serde_urlencoded::from_str::<Vec<(String, String)>>(param);
    let key = match decoded.as_deref() {
        Ok([(key, _)]) if !key.contains('=') => key.as_str(),
        Ok([]) => return None,
        _ => return Some("***".into()),
    };
    let written = param.split('=').next().unwrap_or_default();
    is_secret_param(key).then(|| format!("{written}=***"))
}

/// Whether a URL query parameter's (decoded) name is one that carries a credential.
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "token",
        "secret",
        "key",
        "credential",
    ]
    .iter()
    .any(|secret| key.contains(secret))
}

/// Makes this process's memory and `/proc/<pid>/environ` readable by root only (not "dumpable"),
/// so a program it runs for an approved command — as the same OS user — cannot read the audit key,
/// tokens or database password from it. Called by `hoop serve` and `hoop agent`; it also turns off
/// core dumps, which would hold the same secrets.
pub fn protect_secrets_in_memory() {
    // SAFETY: PR_SET_DUMPABLE takes a plain integer and changes only this process's flags.
    let done = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    if !done {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot protect this process's memory from programs it runs"
        );
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
    use super::{protect_secrets_in_memory, redact, skew_warning};

    #[test]
    fn the_process_is_made_undumpable() {
        protect_secrets_in_memory();
        // SAFETY: PR_GET_DUMPABLE only reads this process's flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }

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

    #[test]
    fn redact_hides_every_secret_form_of_a_database_url() {
        let cases = [
            (
                "postgres://hoop:s3cret@db:5432/hoop",
                "postgres://hoop:***@db:5432/hoop",
            ),
            (
                "postgres://hoop@db/hoop?password=s3cret",
                "postgres://hoop@db/hoop?password=***",
            ),
            (
                "postgres://db/hoop?sslmode=require&sslpassword=s3cret&application_name=hoop",
                "postgres://db/hoop?sslmode=require&sslpassword=***&application_name=hoop",
            ),
            (
                "postgres://u:p@db/hoop?PASSWORD=s3cret&auth_token=t0k",
                "postgres://u:***@db/hoop?PASSWORD=***&auth_token=***",
            ),
            (
                "postgres://db/hoop?options=-c%20user%3Da@b",
                "postgres://db/hoop?options=-c%20user%3Da@b",
            ),
            // Encoded names, which the drivers decode and read as `password`.
            (
                "postgres://u@h/db?pass%77ord=s3cret",
                "postgres://u@h/db?pass%77ord=***",
            ),
            (
                "postgres://u@h/db?%70%61%73%73%77%6F%72%64=s3cret&sslmode=disable",
                "postgres://u@h/db?%70%61%73%73%77%6F%72%64=***&sslmode=disable",
            ),
            (
                "mysql://u@h/db?PASS%57ORD=s3cret",
                "mysql://u@h/db?PASS%57ORD=***",
            ),
            // An encoded `=` in the name does not carry the value into what is shown.
            (
                "postgres://u@h/db?password%3Ds3cret&x=1",
                "postgres://u@h/db?***&x=1",
            ),
            ("postgres://u:%73%33cret@h/db", "postgres://u:***@h/db"),
            ("sqlite://hoop.db", "sqlite://hoop.db"),
            ("sqlite://hoop.db?mode=rwc", "sqlite://hoop.db?mode=rwc"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact(url), expected, "{url}");
            assert!(!redact(url).contains("s3cret"));
        }
    }
}
