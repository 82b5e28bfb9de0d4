//! The use cases: submit, decide (approve, reject, cancel), wait, expire, and the agent's claim,
//! heartbeat and report. Each one reads the request, lets the pure domain rules decide, and applies
//! the outcome as a compare-and-set; when another writer got there first it re-reads and decides
//! again, so the answer always reflects the state that actually won.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::changes::ChangeHub;
use crate::config::Config;
use crate::domain::{
    self, AccessRequest, Admission, Decision, DecisionError, ExecutionResult, Identity, Millis,
    Outcome, Rejection, Status,
};
use crate::error::{Error, Result};
use crate::store::{
    AuditEntry, Change, Claim, GroupDecision, ListFilter, NewRequest, OutboxEntry, Store,
    StoreError,
};

/// Waiters re-read the database at least this often, in case a wake-up was missed.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// Attempts at a compare-and-set before giving up under extreme contention.
const MAX_ATTEMPTS: usize = 64;
/// The recorded outcome of a job whose agent stopped heartbeating: it may or may not have run.
pub const AGENT_LOST: &str = "agent lost; outcome unknown";
pub const MAX_JUSTIFICATION_BYTES: usize = 4096;
pub const MAX_REASON_BYTES: usize = 4096;

/// The current time in milliseconds; replaceable so tests can move time forward.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Millis + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(|| chrono::Utc::now().timestamp_millis()))
    }

    /// A clock that reads `now`; tests advance it.
    pub fn manual(now: Arc<AtomicI64>) -> Clock {
        Clock(Arc::new(move || now.load(Ordering::SeqCst)))
    }

    pub fn now(&self) -> Millis {
        (self.0)()
    }
}

/// A new command as submitted.
#[derive(Debug, Clone)]
pub struct Submission {
    pub connection: String,
    pub command: String,
    pub justification: Option<String>,
}

/// hoopbot's core: configuration, storage and wake-ups, shared by every surface.
#[derive(Clone)]
pub struct Hoop {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub changes: Arc<ChangeHub>,
    pub clock: Clock,
}

impl Hoop {
    /// The configured user behind `email`, with their current groups.
    pub fn identity(&self, email: &str) -> Option<Identity> {
        let user = self.config.user(email)?;
        Some(Identity {
            email: user.email.clone(),
            is_admin: user.groups.contains(&self.config.server.admin_group),
            groups: user.groups.clone(),
        })
    }

    #[tracing::instrument(skip_all, fields(requester = %requester.email, connection = %input.connection), err(level = "info"))]
    pub async fn submit(
        &self,
        requester: &Identity,
        input: Submission,
        channel: &str,
    ) -> Result<AccessRequest> {
        let connection = self.config.connection(&input.connection).ok_or_else(|| {
            Error::NotFound(format!(
                "connection {:?} not found; known connections: {}",
                input.connection,
                self.config
                    .connections
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        self.check_command(&input.command)?;
        let justification = match input.justification.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(j) if j.len() > MAX_JUSTIFICATION_BYTES => {
                return Err(Error::InvalidInput(format!(
                    "justification is longer than {MAX_JUSTIFICATION_BYTES} bytes"
                )));
            }
            Some(j) if j.contains('\0') => {
                return Err(Error::InvalidInput(
                    "the justification contains a NUL byte".into(),
                ));
            }
            Some(j) => Some(j.to_string()),
        };

        let now = self.clock.now();
        let admission = domain::admit(&connection.policy, requester);
        let sha256 = domain::command_sha256(&input.command);
        let timeout_ms =
            i64::try_from(connection.policy.timeout.as_millis()).unwrap_or(i64::MAX / 2);
        let mut new = NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            connection: connection.name.clone(),
            command: input.command,
            command_sha256: sha256.clone(),
            requester: requester.email.clone(),
            justification,
            status: Status::Pending,
            created_at: now,
            expires_at: now.saturating_add(timeout_ms),
            decided_at: None,
            approval_groups: Vec::new(),
        };
        let mut audit = vec![AuditEntry {
            kind: "created",
            actor: requester.email.clone(),
            channel: channel.to_string(),
            detail: json!({
                "connection": new.connection,
                "command_sha256": sha256,
                "command_bytes": new.command.len(),
                "justification": new.justification,
            }),
        }];
        match admission {
            Admission::Hold { approval_groups } => {
                audit.push(AuditEntry::system(
                    "held",
                    json!({ "approval_groups": approval_groups, "expires_at": crate::http::view::time(new.expires_at) }),
                ));
                new.approval_groups = approval_groups;
            }
            Admission::AutoApprove(reason) => {
                audit.push(AuditEntry::system(
                    "auto_approved",
                    json!({ "reason": reason.code(), "description": reason.describe() }),
                ));
                new.status = Status::Approved;
                new.decided_at = Some(now);
            }
        }
        let outbox = vec![event(&new.id, "created", new.status, now)];
        self.store.insert_request(&new, &audit, &outbox).await?;
        tracing::info!(request_id = %new.id, status = %new.status, "command submitted");
        self.fetch(&new.id).await
    }

    fn check_command(&self, command: &str) -> Result<()> {
        let limit = self.config.server.max_command_bytes;
        if command.len() > limit {
            return Err(Error::TooLarge(format!(
                "the command is {} bytes; the limit is {limit} bytes",
                command.len()
            )));
        }
        if command.trim().is_empty() {
            return Err(Error::InvalidInput("the command is empty".into()));
        }
        if command.contains('\0') {
            return Err(Error::InvalidInput(
                "the command contains a NUL byte".into(),
            ));
        }
        Ok(())
    }

    /// The request as it is now. A pending request past its deadline is expired on the spot, so no
    /// reader ever sees it as still decidable.
    pub async fn get(&self, id: &str) -> Result<AccessRequest> {
        let request = self.fetch(id).await?;
        if request.status == Status::Pending && request.is_expired_at(self.clock.now()) {
            self.expire(&request).await?;
            return self.fetch(id).await;
        }
        Ok(request)
    }

    async fn fetch(&self, id: &str) -> Result<AccessRequest> {
        let not_found = || Error::NotFound(format!("access request {id:?} not found"));
        // No id holds a NUL, and Postgres refuses one as a parameter.
        if id.contains('\0') {
            return Err(not_found());
        }
        self.store.get_request(id).await?.ok_or_else(not_found)
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<AccessRequest>> {
        let texts = [&filter.connection, &filter.requester, &filter.before_id];
        if texts
            .iter()
            .any(|t| t.as_deref().is_some_and(|t| t.contains('\0')))
        {
            return Err(Error::InvalidInput("a filter contains a NUL byte".into()));
        }
        Ok(self.store.list_requests(filter).await?)
    }

    /// Approves, rejects or cancels request `id` on behalf of `actor`.
    #[tracing::instrument(skip_all, fields(request_id = %id, actor = %actor.email), err(level = "info"))]
    pub async fn decide(
        &self,
        actor: &Identity,
        id: &str,
        decision: Decision,
        channel: &str,
    ) -> Result<AccessRequest> {
        if let Decision::Reject { reason } = &decision {
            if reason.len() > MAX_REASON_BYTES {
                return Err(Error::InvalidInput(format!(
                    "reason is longer than {MAX_REASON_BYTES} bytes"
                )));
            }
            if reason.contains('\0') {
                return Err(Error::InvalidInput("the reason contains a NUL byte".into()));
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let request = self.fetch(id).await?;
            let now = self.clock.now();
            let outcome = match domain::decide(&request, actor, &decision, now) {
                Ok(outcome) => outcome,
                Err(DecisionError::Expired) => {
                    if request.status == Status::Pending {
                        self.expire(&request).await?;
                    }
                    return Err(DecisionError::Expired.into());
                }
                Err(e) => return Err(e.into()),
            };
            let change = decision_change(&request, actor, outcome, channel, now);
            match self.store.apply(&change).await {
                Ok(()) => {
                    tracing::info!(status = ?change.status, "decision recorded");
                    return Ok(change.applied_to(request));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(anyhow::anyhow!(
            "request {id} kept changing; gave up deciding"
        )))
    }

    /// Moves a pending, overdue request to `expired`. Losing the race (to a decision made in time or
    /// to another replica's sweeper) is fine: the request has an outcome either way.
    async fn expire(&self, request: &AccessRequest) -> Result<()> {
        let now = self.clock.now();
        let mut change = Change::to(request, now);
        change.status = Some(Status::Expired);
        change.decided_at = Some(now);
        change.audit.push(AuditEntry::system(
            "expired",
            json!({ "expires_at": crate::http::view::time(request.expires_at) }),
        ));
        change
            .outbox
            .push(event(&request.id, "expired", Status::Expired, now));
        match self.store.apply(&change).await {
            Ok(()) => {
                tracing::info!(request_id = %request.id, "request expired");
                Ok(())
            }
            Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// One sweep: expires overdue requests and fails jobs whose agent vanished. Returns how many
    /// requests it moved.
    pub async fn sweep(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut moved = 0;
        for request in self.store.overdue_requests(now, 500).await? {
            self.expire(&request).await?;
            moved += 1;
        }
        for job in self.store.lost_jobs(now, 500).await? {
            let result = ExecutionResult {
                error: Some(AGENT_LOST.into()),
                agent: job.claimed_by.clone(),
                ..ExecutionResult::default()
            };
            let mut change = Change::to(&job, now);
            change.status = Some(Status::Failed);
            change.result = Some(result);
            change.audit.push(AuditEntry::system(
                "failed",
                json!({ "error": AGENT_LOST, "agent": job.claimed_by }),
            ));
            change
                .outbox
                .push(event(&job.id, "failed", Status::Failed, now));
            match self.store.apply(&change).await {
                Ok(()) => {
                    tracing::warn!(request_id = %job.id, agent = ?job.claimed_by, "agent lost; job failed with outcome unknown");
                    moved += 1;
                }
                // A heartbeat or report came in meanwhile: the agent is alive after all.
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }

    /// Waits until request `id` is newer than `version`, or `timeout` passes, and returns it.
    /// Woken by the change itself; re-reads on a timer too, and expires the request at its deadline.
    /// Answers at once when the server shuts down; clients simply wait again elsewhere.
    pub async fn wait(&self, id: &str, version: i64, timeout: Duration) -> Result<AccessRequest> {
        let watch = self.changes.watch(id);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut closing = false;
        loop {
            // Enabled before reading, so a change committed between the read and the sleep still
            // wakes us.
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let request = self.get(id).await?;
            if request.version > version || tokio::time::Instant::now() >= deadline || closing {
                return Ok(request);
            }
            let mut next = deadline.min(tokio::time::Instant::now() + WAIT_POLL);
            if request.status == Status::Pending {
                let until_expiry = (request.expires_at - self.clock.now()).max(0) as u64;
                next = next.min(tokio::time::Instant::now() + Duration::from_millis(until_expiry));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changes.closed() => closing = true,
            }
        }
    }

    /// Hands agent `agent` the oldest approved job of `connections`, waiting up to `timeout`.
    pub async fn claim(
        &self,
        agent: &str,
        connections: &[String],
        timeout: Duration,
    ) -> Result<Option<AccessRequest>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changes.jobs().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now();
            let claim = Claim {
                agent: agent.to_string(),
                connections: connections.to_vec(),
                now,
                lease_until: now + self.lease_ms(),
            };
            if let Some(job) = self.store.claim_next(&claim).await? {
                tracing::info!(request_id = %job.id, agent, "job claimed");
                return Ok(Some(job));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            let next = deadline.min(tokio::time::Instant::now() + WAIT_POLL);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changes.closed() => return Ok(None),
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.server.job_lease.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Extends the lease of a job `agent` is running.
    pub async fn heartbeat(&self, agent: &str, id: &str) -> Result<AccessRequest> {
        for _ in 0..MAX_ATTEMPTS {
            let job = self.running_job(agent, id).await?;
            let now = self.clock.now();
            let mut change = Change::to(&job, now);
            change.lease_until = Some(now + self.lease_ms());
            match self.store.apply(&change).await {
                Ok(()) => return Ok(change.applied_to(job)),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(anyhow::anyhow!("job {id} kept changing")))
    }

    /// Records the outcome of a job `agent` ran: `executed`, or `failed` when `result.error` is set.
    pub async fn report(
        &self,
        agent: &str,
        id: &str,
        mut result: ExecutionResult,
    ) -> Result<AccessRequest> {
        result.agent = Some(agent.to_string());
        for _ in 0..MAX_ATTEMPTS {
            let job = self.fetch(id).await?;
            let now = self.clock.now();
            let late = job.status == Status::Failed
                && job.claimed_by.as_deref() == Some(agent)
                && job.result.as_ref().and_then(|r| r.error.as_deref()) == Some(AGENT_LOST);
            if late {
                // The job was given up for lost, but its agent did finish. Its outcome is kept
                // in the audit trail; the status stays failed, as already announced.
                let mut change = Change::to(&job, now);
                change.audit.push(AuditEntry {
                    kind: "late_result",
                    actor: agent.to_string(),
                    channel: "agent".into(),
                    detail: result_summary(&result),
                });
                match self.store.apply(&change).await {
                    Ok(()) => {
                        tracing::warn!(request_id = %id, agent, "result arrived after the job was given up for lost");
                        return Ok(change.applied_to(job));
                    }
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let job = running(job, agent)?;
            let status = if result.error.is_some() {
                Status::Failed
            } else {
                Status::Executed
            };
            let mut change = Change::to(&job, now);
            change.status = Some(status);
            change.audit.push(AuditEntry {
                kind: if status == Status::Failed {
                    "failed"
                } else {
                    "executed"
                },
                actor: agent.to_string(),
                channel: "agent".into(),
                detail: result_summary(&result),
            });
            change.outbox.push(event(id, status.as_str(), status, now));
            change.result = Some(result.clone());
            match self.store.apply(&change).await {
                Ok(()) => {
                    tracing::info!(request_id = %id, agent, %status, "job finished");
                    return Ok(change.applied_to(job));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(anyhow::anyhow!("job {id} kept changing")))
    }

    /// Records that an agent refused a job before running anything (e.g. a SHA-256 mismatch).
    pub async fn refuse(&self, agent: &str, id: &str, reason: &str) -> Result<AccessRequest> {
        let result = ExecutionResult {
            error: Some(format!("refused by agent {agent}: {reason}")),
            ..ExecutionResult::default()
        };
        self.report(agent, id, result).await
    }

    async fn running_job(&self, agent: &str, id: &str) -> Result<AccessRequest> {
        running(self.fetch(id).await?, agent)
    }
}

/// `job`, if it is running for `agent`.
fn running(job: AccessRequest, agent: &str) -> Result<AccessRequest> {
    if job.claimed_by.as_deref() != Some(agent) {
        return Err(Error::Forbidden(format!(
            "job {} is not claimed by agent {agent}",
            job.id
        )));
    }
    if job.status != Status::Running {
        return Err(Error::AlreadyDecided(format!(
            "job {} is {}, not running",
            job.id, job.status
        )));
    }
    Ok(job)
}

/// What the audit trail keeps of a result (the full result is on the request).
fn result_summary(result: &ExecutionResult) -> serde_json::Value {
    json!({
        "error": result.error,
        "exit_code": result.exit_code,
        "statements": result.results.len(),
        "truncated": result.truncated,
    })
}

/// The change a permitted decision makes, with its audit events and outbox entries.
fn decision_change(
    request: &AccessRequest,
    actor: &Identity,
    outcome: Outcome,
    channel: &str,
    now: Millis,
) -> Change {
    let mut change = Change::to(request, now);
    change.before_deadline = Some(now);
    let audit = |kind: &'static str, detail| AuditEntry {
        kind,
        actor: actor.email.clone(),
        channel: channel.to_string(),
        detail,
    };
    match outcome {
        Outcome::GroupApproved { group, completes } => {
            change
                .audit
                .push(audit("group_approved", json!({ "group": group })));
            change.group_approval = Some(GroupDecision {
                group,
                by: actor.email.clone(),
                via: channel.to_string(),
            });
            if completes {
                change.status = Some(Status::Approved);
                change.decided_at = Some(now);
                change.audit.push(AuditEntry::system(
                    "approved",
                    json!({ "reason": "every approval group approved" }),
                ));
                change
                    .outbox
                    .push(event(&request.id, "approved", Status::Approved, now));
            } else {
                change
                    .outbox
                    .push(event(&request.id, "group_approved", Status::Pending, now));
            }
        }
        Outcome::Rejected { reason } => {
            change
                .audit
                .push(audit("rejected", json!({ "reason": reason })));
            change.status = Some(Status::Rejected);
            change.decided_at = Some(now);
            change.rejection = Some(Rejection {
                by: actor.email.clone(),
                reason,
                at: now,
                via: channel.to_string(),
            });
            change
                .outbox
                .push(event(&request.id, "rejected", Status::Rejected, now));
        }
        Outcome::Cancelled => {
            change.audit.push(audit("cancelled", json!({})));
            change.status = Some(Status::Cancelled);
            change.decided_at = Some(now);
            change
                .outbox
                .push(event(&request.id, "cancelled", Status::Cancelled, now));
        }
    }
    change
}

/// An outbox entry announcing `what` happened to a request. Consumers re-read the request when they
/// deliver, so cards always show its latest state.
fn event(request_id: &str, what: &str, status: Status, at: Millis) -> OutboxEntry {
    OutboxEntry {
        topic: format!("access_request.{what}"),
        payload: json!({ "request_id": request_id, "status": status, "at": at }),
    }
}
