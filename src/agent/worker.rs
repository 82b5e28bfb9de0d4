//! The claim loop, shared by `hoop agent` (talking HTTP to the server) and `hoop serve` (running
//! embedded connections in-process): claim a job (an offer), start it, check its SHA-256, keep its
//! lease alive while it runs, report the result. Nothing runs before the server has confirmed the
//! start, so an agent that stops between claim and start loses nothing: the offer lapses and the
//! job is approved again for the next agent. A started job is never given up silently and never run
//! twice: if this process dies, the server marks it failed with "outcome unknown" when the lease
//! runs out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::executor;
use crate::config::ConnectionTarget;
use crate::domain::{self, ConnectionName, ExecutionResult};

/// How long one claim request waits for a job before asking again.
const CLAIM_WAIT: Duration = Duration::from_secs(25);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait before claiming again after the server could not be reached.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The first wait before sending a job's start or result again: the job is waiting on it.
const FIRST_RESEND: Duration = Duration::from_millis(200);
/// How long a stopping agent keeps trying to report a result the server cannot take yet (it is
/// restarting, say) before it exits anyway; the server then fails the job as "outcome unknown".
const DRAIN: Duration = Duration::from_secs(10);
/// How much of the command's own error a refused report keeps.
const MAX_KEPT_ERROR: usize = 2000;

/// A job as offered to an agent.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub connection: String,
    pub command: String,
    pub command_sha256: String,
    /// The offer to start the job with.
    pub offer: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct QueueError {
    /// Worth retrying: the server was unreachable or failing, not refusing.
    pub transient: bool,
    pub message: String,
}

/// Where jobs come from and results go: the server over HTTP, or the service in-process.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Waits up to `wait` for a job of `connections`; returns it offered, not yet started.
    async fn claim(
        &self,
        connections: &[ConnectionName],
        wait: Duration,
    ) -> Result<Option<Job>, QueueError>;
    /// Starts an offered job; returns its lease. Refused when the offer is gone.
    async fn start(&self, job: &Job) -> Result<Duration, QueueError>;
    async fn heartbeat(&self, id: &str) -> Result<(), QueueError>;
    async fn report(&self, id: &str, result: &ExecutionResult) -> Result<(), QueueError>;
    async fn refuse(&self, id: &str, reason: &str) -> Result<(), QueueError>;
}

/// What an agent tells the server about a job it started.
enum Report {
    Ran(ExecutionResult),
    Refused(String),
}

/// Runs the jobs of the connections it has targets for.
pub struct Agent {
    queue: Arc<dyn JobQueue>,
    targets: BTreeMap<ConnectionName, ConnectionTarget>,
    /// How long a stopping agent keeps trying to report a result.
    drain: Duration,
}

impl Agent {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        targets: impl IntoIterator<Item = (ConnectionName, ConnectionTarget)>,
    ) -> Agent {
        Agent {
            queue,
            targets: targets.into_iter().collect(),
            drain: DRAIN,
        }
    }

    /// This agent, trying for at most `drain` to report a result once it is stopping.
    pub fn with_drain(self, drain: Duration) -> Agent {
        Agent { drain, ..self }
    }

    pub fn connections(&self) -> Vec<ConnectionName> {
        self.targets.keys().cloned().collect()
    }

    /// Claims and runs jobs until `stop` turns true; a job in progress is finished first. A claim
    /// still waiting when `stop` turns is dropped, and a job offered once `stop` has turned is not
    /// started: either way its offer lapses and the job is approved again for another agent. An
    /// unreachable server is retried with backoff; a refusal (a bad token, a connection the server
    /// does not assign to this agent) ends the loop with that error, since retrying cannot fix it.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<(), QueueError> {
        let mut backoff = crate::retry::backoff(FIRST_RETRY, MAX_BACKOFF);
        while !*stop.borrow() {
            let step = tokio::select! {
                step = self.claim(CLAIM_WAIT) => step,
                _ = stop.changed() => return Ok(()),
            };
            match step {
                Ok(Some(job)) => {
                    backoff = crate::retry::backoff(FIRST_RETRY, MAX_BACKOFF);
                    if *stop.borrow() {
                        tracing::info!(request_id = %job.id, "stopping: not starting the job just offered; it returns to approved");
                        return Ok(());
                    }
                    self.handle(job, stop.clone()).await;
                }
                Ok(None) => backoff = crate::retry::backoff(FIRST_RETRY, MAX_BACKOFF),
                Err(e) if !e.transient => return Err(e),
                Err(e) => {
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot claim jobs");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    /// One claim and, if a job came, its run. Returns the job's id.
    pub async fn run_once(&self, wait: Duration) -> Result<Option<String>, QueueError> {
        match self.claim(wait).await? {
            Some(job) => {
                let id = job.id.clone();
                // Never stopping: a receiver whose sender is gone keeps its `false`.
                self.handle(job, watch::channel(false).1).await;
                Ok(Some(id))
            }
            None => Ok(None),
        }
    }

    async fn claim(&self, wait: Duration) -> Result<Option<Job>, QueueError> {
        self.queue.claim(&self.connections(), wait).await
    }

    #[tracing::instrument(skip_all, fields(request_id = %job.id, connection = %job.connection))]
    async fn handle(&self, job: Job, stop: watch::Receiver<bool>) {
        let Some(lease) = self.start(&job, stop.clone()).await else {
            return;
        };
        // The exact-command check: what runs must be what was approved.
        let actual = domain::command_sha256(&job.command);
        if actual != job.command_sha256 {
            tracing::error!(approved = %job.command_sha256, received = %actual, "command does not match its approved SHA-256; refusing");
            let reason = format!(
                "the command's SHA-256 {actual} does not match the approved {}; nothing was run",
                job.command_sha256
            );
            self.deliver(&job.id, Report::Refused(reason), lease, stop.clone())
                .await;
            return;
        }
        let Some(target) = self.targets.get(job.connection.as_str()) else {
            let reason = format!("this agent has no connection named {}", job.connection);
            self.deliver(&job.id, Report::Refused(reason), lease, stop.clone())
                .await;
            return;
        };
        tracing::info!("running approved command");
        let heartbeats = self.keep_alive(&job.id, lease);
        let result = executor::execute(target, &job.command).await;
        heartbeats.abort();
        match &result.error {
            Some(error) => tracing::warn!(%error, "command failed"),
            None => tracing::info!("command executed"),
        }
        self.deliver(&job.id, Report::Ran(result), lease, stop)
            .await;
    }

    /// Confirms the offer with the server; returns the lease, or `None` when the job must not run
    /// (the offer lapsed or the job was withdrawn). An unreachable server is asked again: a start
    /// repeated with the same offer is answered with the job it already started. Once the agent
    /// is stopping it asks no more: nothing has run, and the offer lapses back to another agent.
    async fn start(&self, job: &Job, mut stop: watch::Receiver<bool>) -> Option<Duration> {
        let mut backoff = crate::retry::backoff(FIRST_RESEND, MAX_BACKOFF);
        loop {
            match self.queue.start(job).await {
                Ok(lease) => return Some(lease),
                Err(e) if e.transient => {
                    if *stop.borrow() {
                        tracing::info!(error = %e, "stopping: the job was never started; its offer lapses and another agent takes it");
                        return None;
                    }
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot start the job yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = until_stopped(&mut stop) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the server did not let this agent start the job; nothing was run");
                    return None;
                }
            }
        }
    }

    /// Sends a report until the server takes it (heartbeating meanwhile, so the job is not taken
    /// for lost). A result the server refuses for good (too large, or otherwise not acceptable) is
    /// replaced once by a small one that records the run as failed with the refusal's reason, so
    /// the job ends with what is known instead of "outcome unknown". Once the agent is stopping,
    /// it keeps trying for its drain time at most, then gives up (the server will fail the job as
    /// "outcome unknown"), so a restart is not held up by a server that is away.
    async fn deliver(
        &self,
        id: &str,
        mut report: Report,
        lease: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let heartbeats = self.keep_alive(id, lease);
        let mut backoff = crate::retry::backoff(FIRST_RESEND, MAX_BACKOFF);
        let mut summarized = false;
        let mut drain_until = None;
        loop {
            let sent = match &report {
                Report::Ran(result) => self.queue.report(id, result).await,
                Report::Refused(reason) => self.queue.refuse(id, reason).await,
            };
            match sent {
                Ok(()) => break,
                Err(e) if e.transient => {
                    let wait = backoff.next().unwrap_or(MAX_BACKOFF);
                    if *stop.borrow() {
                        let until = *drain_until
                            .get_or_insert_with(|| tokio::time::Instant::now() + self.drain);
                        let left = until.saturating_duration_since(tokio::time::Instant::now());
                        if left.is_zero() {
                            tracing::error!(error = %e, "stopping: the result could not be reported within the drain time; the server will record the job as failed, outcome unknown");
                            break;
                        }
                        tracing::warn!(error = %e, retry_in = ?wait.min(left), "stopping, but the result is not reported yet; retrying");
                        tokio::time::sleep(wait.min(left)).await;
                        continue;
                    }
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot report the result yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = until_stopped(&mut stop) => {}
                    }
                }
                Err(e) => match report {
                    Report::Ran(result) if !summarized => {
                        tracing::error!(error = %e, "the server refused the result; reporting the run as failed with the reason instead");
                        report = Report::Ran(refused_result(&result, &e));
                        summarized = true;
                    }
                    _ => {
                        tracing::error!(error = %e, "the server refused the report; the job's outcome is not recorded");
                        break;
                    }
                },
            }
        }
        heartbeats.abort();
    }

    /// Heartbeats every third of the lease until aborted.
    fn keep_alive(&self, id: &str, lease: Duration) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let id = id.to_string();
        let every = (lease / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.heartbeat(&id).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        })
    }
}

/// Returns once `stop` turns true; never, if it cannot any more (its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What is reported when the server refused `result` itself: that the command ran, why the result
/// was refused, and the exit code and error it had (the output is not sent again).
fn refused_result(result: &ExecutionResult, refusal: &QueueError) -> ExecutionResult {
    let mut error = format!(
        "the command ran, but the server refused its result ({refusal}); its output is lost"
    );
    if let Some(own) = &result.error {
        let mut end = own.len().min(MAX_KEPT_ERROR);
        while !own.is_char_boundary(end) {
            end -= 1;
        }
        error.push_str(&format!("; the command's own error: {}", &own[..end]));
    }
    ExecutionResult {
        error: Some(error),
        exit_code: result.exit_code,
        truncated: true,
        started_at: result.started_at.clone(),
        finished_at: result.finished_at.clone(),
        ..ExecutionResult::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::ConnectionType;

    /// A queue with one job, which records what the agent does with it.
    struct FakeQueue {
        job: Mutex<Option<Job>>,
        /// Refuse starting the job, as the server does when its offer is gone.
        refuse_start: bool,
        /// Refuse, for good, any result that carries output (as a 413 would).
        refuse_output: bool,
        /// Turned to true as the claim returns, like a SIGTERM arriving just then.
        stop_on_claim: Option<watch::Sender<bool>>,
        /// The server is away: starts and reports fail as a restart makes them fail.
        away: bool,
        /// Turned to true at the first start or report, like a SIGTERM arriving then.
        stop_on_start: Option<watch::Sender<bool>>,
        stop_on_report: Option<watch::Sender<bool>>,
        started: Mutex<Vec<String>>,
        reports: Mutex<Vec<ExecutionResult>>,
    }

    impl FakeQueue {
        fn new(command: &str) -> FakeQueue {
            FakeQueue {
                job: Mutex::new(Some(Job {
                    id: "r1".into(),
                    connection: "box".into(),
                    command: command.into(),
                    command_sha256: domain::command_sha256(command),
                    offer: "offer-1".into(),
                })),
                refuse_start: false,
                refuse_output: false,
                stop_on_claim: None,
                away: false,
                stop_on_start: None,
                stop_on_report: None,
                started: Mutex::default(),
                reports: Mutex::default(),
            }
        }
    }

    fn gone() -> QueueError {
        QueueError {
            transient: true,
            message: "connection refused".into(),
        }
    }

    fn refusal(message: &str) -> QueueError {
        QueueError {
            transient: false,
            message: message.into(),
        }
    }

    #[async_trait]
    impl JobQueue for FakeQueue {
        async fn claim(
            &self,
            _: &[ConnectionName],
            _: Duration,
        ) -> Result<Option<Job>, QueueError> {
            let job = self.job.lock().unwrap().take();
            if let Some(stop) = &self.stop_on_claim {
                stop.send_replace(true);
            }
            Ok(job)
        }
        async fn start(&self, job: &Job) -> Result<Duration, QueueError> {
            if let Some(stop) = &self.stop_on_start {
                stop.send_replace(true);
            }
            if self.away {
                return Err(gone());
            }
            if self.refuse_start {
                return Err(refusal(
                    "the offer of job r1 was withdrawn before it started",
                ));
            }
            self.started.lock().unwrap().push(job.offer.clone());
            Ok(Duration::from_secs(30))
        }
        async fn heartbeat(&self, _: &str) -> Result<(), QueueError> {
            Ok(())
        }
        async fn report(&self, _: &str, result: &ExecutionResult) -> Result<(), QueueError> {
            self.reports.lock().unwrap().push(result.clone());
            if let Some(stop) = &self.stop_on_report {
                stop.send_replace(true);
            }
            if self.away {
                return Err(gone());
            }
            if self.refuse_output && result.stdout.is_some() {
                return Err(refusal("the request body is too large"));
            }
            Ok(())
        }
        async fn refuse(&self, _: &str, _: &str) -> Result<(), QueueError> {
            Ok(())
        }
    }

    fn agent(queue: Arc<dyn JobQueue>) -> Agent {
        let target = ConnectionTarget {
            kind: ConnectionType::Command,
            url: None,
            command: Some(vec!["bash".into()]),
            statement_timeout: Some(Duration::from_secs(30)),
            max_rows: 100,
            max_output_bytes: 1 << 20,
            env: Default::default(),
        };
        Agent::new(queue, [(ConnectionName::parse("box").unwrap(), target)])
    }

    #[tokio::test]
    async fn a_refused_result_is_reported_as_failed_with_the_reason_and_exit_code() {
        let mut queue = FakeQueue::new("echo lots of output; exit 3");
        queue.refuse_output = true;
        let queue = Arc::new(queue);
        agent(queue.clone()).run_once(Duration::ZERO).await.unwrap();
        let reports = queue.reports.lock().unwrap();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].stdout.as_deref(), Some("lots of output\n"));
        let summary = &reports[1];
        assert_eq!(
            summary.error.as_deref(),
            Some(
                "the command ran, but the server refused its result (the request body is too large); its output is lost"
            )
        );
        assert_eq!(summary.exit_code, Some(3));
        assert!(summary.truncated);
        assert_eq!(summary.stdout, None);
    }

    #[tokio::test]
    async fn a_job_whose_start_is_refused_is_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let mut queue = FakeQueue::new(&format!("touch {}", marker.display()));
        queue.refuse_start = true;
        let queue = Arc::new(queue);
        agent(queue.clone()).run_once(Duration::ZERO).await.unwrap();
        assert!(!marker.exists(), "nothing may run without a start");
        assert!(queue.reports.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_agent_stopping_does_not_start_the_job_offered_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let (stop, stopped) = watch::channel(false);
        let mut queue = FakeQueue::new(&format!("touch {}", marker.display()));
        queue.stop_on_claim = Some(stop);
        let queue = Arc::new(queue);
        agent(queue.clone()).run(stopped).await.unwrap();
        assert!(
            queue.started.lock().unwrap().is_empty(),
            "left to lapse, so the server offers it again"
        );
        assert!(!marker.exists());
    }

    /// A generous guard against a hang, not a timing assertion: without the drain the agent
    /// would retry for as long as the server is away.
    const HANG: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_stopping_agent_does_not_wait_for_an_away_server_to_start_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let (stop, stopped) = watch::channel(false);
        let mut queue = FakeQueue::new(&format!("touch {}", marker.display()));
        queue.away = true;
        queue.stop_on_start = Some(stop);
        let queue = Arc::new(queue);
        let agent = agent(queue.clone());
        tokio::time::timeout(HANG, agent.run(stopped))
            .await
            .expect("the agent stops without the server")
            .unwrap();
        assert!(!marker.exists(), "never started, never run");
        assert!(queue.reports.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_stopping_agent_reports_a_result_for_its_drain_time_at_most() {
        let (stop, stopped) = watch::channel(false);
        let mut queue = FakeQueue::new("echo ran");
        queue.stop_on_report = Some(stop);
        let queue = Arc::new(queue);
        // The start goes through; the server is away only for the report.
        let agent =
            agent(Arc::new(ReportsAway(queue.clone()))).with_drain(Duration::from_millis(300));
        tokio::time::timeout(HANG, agent.run(stopped))
            .await
            .expect("the agent gives up reporting once its drain time is over")
            .unwrap();
        let reports = queue.reports.lock().unwrap();
        assert!(
            reports.len() >= 2,
            "kept trying while draining: {reports:?}"
        );
        assert_eq!(reports[0].stdout.as_deref(), Some("ran\n"));
    }

    /// [`FakeQueue`], with every report failing as if the server were away.
    struct ReportsAway(Arc<FakeQueue>);

    #[async_trait]
    impl JobQueue for ReportsAway {
        async fn claim(
            &self,
            connections: &[ConnectionName],
            wait: Duration,
        ) -> Result<Option<Job>, QueueError> {
            self.0.claim(connections, wait).await
        }
        async fn start(&self, job: &Job) -> Result<Duration, QueueError> {
            self.0.start(job).await
        }
        async fn heartbeat(&self, id: &str) -> Result<(), QueueError> {
            self.0.heartbeat(id).await
        }
        async fn report(&self, id: &str, result: &ExecutionResult) -> Result<(), QueueError> {
            self.0.report(id, result).await?;
            Err(gone())
        }
        async fn refuse(&self, id: &str, reason: &str) -> Result<(), QueueError> {
            self.0.refuse(id, reason).await
        }
    }
}
