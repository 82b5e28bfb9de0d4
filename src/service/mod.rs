//! The use cases: submit, decide (approve, reject, cancel), wait, expire, and the agent's claim,
//! heartbeat and report. Each one reads the request, lets the pure domain rules decide, and applies
//! the outcome as a compare-and-set; when another writer got there first it re-reads and decides
//! again, so the answer always reflects the state that actually won.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::audit::AuditKind;
use crate::changes::ChangeHub;
use crate::config::Config;
use crate::domain::{
    self, AccessRequest, Admission, Clock, ConnectionName, Decision, DecisionError, Email, Event,
    ExecutionResult, Identity, Millis, Outcome, Rejection, Status, Surface,
};
use crate::error::{Error, Result};
use crate::store::{
    AuditEntry, Change, Claim, GroupDecision, ListFilter, NewRequest, OutboxEntry, Overdue, Store,
    StoreError,
};

/// Agents waiting for a job look again at least this often (offers that lapse back to `approved`
/// announce nothing); there are few agents, unlike waiters.
const CLAIM_POLL: Duration = Duration::from_secs(2);
/// Attempts at a compare-and-set before giving up under extreme contention.
const MAX_ATTEMPTS: usize = 64;
/// The recorded outcome of a job whose agent stopped heartbeating: it may or may not have run.
pub const AGENT_LOST: &str = "agent lost; outcome unknown";
/// The recorded outcome of an approved job no agent started before its connection's pickup
/// deadline.
pub const NOT_PICKED_UP: &str = "no agent picked it up";
/// How long a claimed job is offered to its agent before it must be started. An offer nobody
/// starts (the agent stopped, or the claim's reply was lost) returns to `approved`.
pub const OFFER_TIME: Duration = Duration::from_secs(10);
/// Rows one sweep step moves at most; the rest wait for the next sweep.
const SWEEP_BATCH: i64 = 500;
pub const MAX_JUSTIFICATION_BYTES: usize = 4096;
pub const MAX_REASON_BYTES: usize = 4096;

mod accounts;
mod audit_log;
mod deliveries;
mod link_attempts;
mod messages;
mod replays;
mod sessions;
mod tokens;

pub use accounts::{LINK_CODE_TTL, LinkCode};
pub use deliveries::{WebhookEndpoints, WebhookPing};
pub use link_attempts::{LINK_FAILURE_WINDOW, LINK_FAILURES_PER_SOURCE, LINK_FAILURES_PER_USER};
pub use messages::LinkedPerson;
pub use replays::{SIGNATURES_PASS_FOR_AT_MOST, Signed};
pub use sessions::{CliToken, NewSession, SESSION_TTL, SignedIn, Vouched};

/// Refuses anyone but an admin to do `what`.
fn admin_only(actor: &Identity, what: &str) -> Result<()> {
    if actor.is_admin {
        Ok(())
    } else {
        Err(Error::Forbidden(format!("only admins may {what}")))
    }
}

/// A new command as submitted.
#[derive(Debug, Clone)]
pub struct Submission {
    pub connection: ConnectionName,
    pub command: String,
    pub justification: Option<String>,
}

/// hoopbot's core: configuration, storage and wake-ups, shared by every surface. Surfaces reach
/// the configuration and the store only through its use cases and the few readings below, so each
/// new surface gets the same rules and audit trail.
#[derive(Clone)]
pub struct Hoop {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    pub changes: Arc<ChangeHub>,
    pub clock: Clock,
    /// The configured webhook endpoints, which admins list and test.
    webhooks: Arc<dyn WebhookEndpoints>,
    /// Wrong link codes counted on this replica, per user and per address.
    link_attempts: Arc<link_attempts::LinkAttempts>,
}

impl Hoop {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        changes: Arc<ChangeHub>,
        clock: Clock,
        webhooks: Arc<dyn WebhookEndpoints>,
    ) -> Hoop {
        Hoop {
            link_attempts: Arc::new(link_attempts::LinkAttempts::new(&clock)),
            config,
            store,
            changes,
            clock,
            webhooks,
        }
    }

    /// The configured user behind `email`, with their current groups.
    pub fn identity(&self, email: &Email) -> Option<Identity> {
        Some(self.identity_of(self.config.user(email)?))
    }

    /// Every configured user with their current groups, in config order.
    pub fn users(&self) -> Vec<Identity> {
        self.config
            .users
            .iter()
            .map(|user| self.identity_of(user))
            .collect()
    }

    fn identity_of(&self, user: &crate::config::UserConfig) -> Identity {
        Identity {
            email: user.email.clone(),
            is_admin: user.groups.contains(&self.config.server.admin_group),
            groups: user.groups.clone(),
        }
    }

    /// Where people reach this server; links to requests start with it.
    /// The configured connections' names, in the config's order: where a command may be sent.
    pub fn connection_names(&self) -> Vec<String> {
        self.config
            .connections
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    /// The configuration as loaded, as TOML with every secret masked (`Config::shown`). Admins
    /// only.
    pub fn effective_config(&self, actor: &Identity) -> Result<String> {
        admin_only(actor, "read the configuration")?;
        Ok(self.config.shown())
    }

    pub fn public_url(&self) -> &str {
        &self.config.server.public_url
    }

    /// The largest command accepted, in bytes.
    pub fn max_command_bytes(&self) -> usize {
        self.config.server.max_command_bytes
    }

    /// How long an agent's claim on a job holds without a heartbeat.
    pub fn job_lease(&self) -> Duration {
        self.config.server.job_lease
    }

    /// This replica's change poll, which relays changes committed elsewhere (another replica or
    /// process) to its waiters until `stop` turns true. It starts from the newest change committed
    /// now, so start it before serving the first request.
    pub async fn change_poll(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let poll = crate::store::ChangePoll::start(self.store.as_ref()).await?;
        Ok(crate::store::poll_forever(
            poll,
            self.store.clone(),
            self.changes.clone(),
            stop,
        ))
    }

    /// Now, as every deadline, lease and decision time is measured: the database's clock on
    /// Postgres (one clock for every replica), this process's on SQLite.
    pub async fn now(&self) -> Result<Millis> {
        Ok(self.store.now(&self.clock).await?)
    }

    /// How far this process's clock is ahead of the one deadlines are measured by (negative:
    /// behind). Always about zero on SQLite.
    pub async fn clock_skew(&self) -> Result<Millis> {
        let reference = self.now().await?;
        Ok(self.clock.now() - reference)
    }

    #[tracing::instrument(skip_all, fields(requester = %requester.email, connection = %input.connection), err(level = "info"))]
    pub async fn submit(
        &self,
        requester: &Identity,
        input: Submission,
        channel: Surface,
    ) -> Result<AccessRequest> {
        let connection = self.config.connection(&input.connection).ok_or_else(|| {
            Error::NotFound(format!(
                "connection {:?} not found; known connections: {}",
                input.connection.as_str(),
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

        let now = self.now().await?;
        let admission = domain::admit(&connection.policy, requester);
        let sha256 = domain::command_sha256(&input.command);
        let timeout_ms =
            i64::try_from(connection.policy.timeout.as_millis()).unwrap_or(i64::MAX / 2);
        let mut new = NewRequest {
            id: uuid::Uuid::now_v7().to_string(),
            connection: connection.name.to_string(),
            command: input.command,
            command_sha256: sha256.clone(),
            requester: requester.email.to_string(),
            justification,
            status: Status::Pending,
            created_at: now,
            expires_at: now.saturating_add(timeout_ms),
            decided_at: None,
            approval_groups: Vec::new(),
            auto_approval: None,
        };
        let mut audit = vec![AuditEntry {
            kind: AuditKind::Created,
            actor: requester.email.to_string(),
            channel,
            detail: json!({
                "connection": new.connection,
                "command_sha256": sha256,
                "command_bytes": new.command.len(),
                "justification": new.justification,
            }),
        }];
        match admission {
            Admission::Hold { approval_groups } => {
                audit.push(AuditEntry::system(AuditKind::Held,
                    json!({ "approval_groups": approval_groups, "expires_at": crate::domain::rfc3339(new.expires_at) }),
                ));
                new.approval_groups = approval_groups;
            }
            Admission::AutoApprove(reason) => {
                audit.push(AuditEntry::system(
                    AuditKind::AutoApproved,
                    json!({ "reason": reason.code(), "description": reason.describe() }),
                ));
                new.status = Status::Approved;
                new.decided_at = Some(now);
                new.auto_approval = Some(reason);
            }
        }
        let stored = new.clone().stored();
        let snapshot = Arc::new(stored.clone());
        let mut outbox = vec![event(Event::Created, &snapshot)];
        // A run that skipped review is announced as such, so it is seen where reviews are.
        if stored.auto_approval.is_some() {
            outbox.push(event(Event::AutoApproved, &snapshot));
        }
        self.store.insert_request(&new, &audit, &outbox).await?;
        tracing::info!(request_id = %new.id, status = %new.status, "command submitted");
        Ok(stored)
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
        if request.status == Status::Pending && request.is_expired_at(self.now().await?) {
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
        channel: Surface,
    ) -> Result<AccessRequest> {
        self.decide_once(actor, id, decision, channel, None).await
    }

    /// [`Hoop::decide`] for a signed chat request, made only if its signature is seen for the
    /// first time (on any replica) and recorded in the same transaction as the decision:
    /// [`Error::Replayed`] and no change when it was seen before.
    pub async fn decide_once(
        &self,
        actor: &Identity,
        id: &str,
        decision: Decision,
        channel: Surface,
        signed: Option<&Signed>,
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
        // No id holds a NUL, and Postgres refuses one as a parameter.
        let not_found = || Error::NotFound(format!("access request {id:?} not found"));
        if id.contains('\0') {
            return Err(not_found());
        }
        let mut signed = signed;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.now().await?;
            // Recorded by the first attempt's transaction, whether its decision won or lost: a
            // later attempt does not bring it again.
            let once = signed.take().map(|signed| signed.seen_at(now));
            // The store's writer reads the request and applies what the rules make of it in one
            // transaction; an overdue pending request is expired on the spot.
            let make = {
                let (actor, decision) = (actor.clone(), decision.clone());
                move |request: &AccessRequest| match domain::decide(request, &actor, &decision, now)
                {
                    Ok(outcome) => Some(decision_change(request, &actor, outcome, channel, now)),
                    Err(DecisionError::Expired) if request.status == Status::Pending => {
                        Some(expiry(request, now))
                    }
                    Err(_) => None,
                }
            };
            let request = match self.store.read_and_apply(id, Box::new(make), once).await {
                Ok(Some(request)) => request,
                Ok(None) => return Err(not_found()),
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Replayed) => return Err(Error::Replayed),
                Err(e) => return Err(e.into()),
            };
            // The same rules on the same reading say what was done, or why not.
            let outcome = domain::decide(&request, actor, &decision, now)?;
            let change = decision_change(&request, actor, outcome, channel, now);
            tracing::info!(status = ?change.status, "decision recorded");
            return Ok(change.applied_to(request));
        }
        Err(Error::Internal(anyhow::anyhow!(
            "request {id} kept changing; gave up deciding"
        )))
    }

    /// Moves a pending, overdue request to `expired`. Losing the race (to a decision made in time or
    /// to another replica's sweeper) is fine: the request has an outcome either way.
    async fn expire(&self, request: &AccessRequest) -> Result<()> {
        let change = expiry(request, self.now().await?);
        match self.store.apply(&change).await {
            Ok(()) => {
                tracing::info!(request_id = %request.id, "request expired");
                Ok(())
            }
            Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// One sweep: expires overdue requests, fails jobs whose agent vanished, returns offers nobody
    /// started, fails approved jobs no agent picked up in time and forgets chat signatures too
    /// old to pass. Each kind is moved in one
    /// transaction that holds its rows, so replicas sweeping at once never repeat each other's
    /// work. Returns how many requests it moved.
    pub async fn sweep(&self) -> Result<usize> {
        let now = self.now().await?;
        let mut moved = 0;
        moved += self
            .store
            .sweep(&Overdue::Pending { now }, SWEEP_BATCH, &|request| {
                expiry(request, now)
            })
            .await?;
        moved += self
            .store
            .sweep(&Overdue::LostJobs { now }, SWEEP_BATCH, &|job| {
                tracing::warn!(request_id = %job.id, agent = ?job.claimed_by, "agent lost; job failed with outcome unknown");
                let result = ExecutionResult {
                    error: Some(AGENT_LOST.into()),
                    agent: job.claimed_by.clone(),
                    ..ExecutionResult::default()
                };
                failure(job, result, json!({ "error": AGENT_LOST, "agent": job.claimed_by }), now)
            })
            .await?;
        // Offers first, so a lapsed offer past its pickup deadline fails in this same sweep.
        moved += self
            .store
            .sweep(&Overdue::LapsedOffers { now }, SWEEP_BATCH, &|job| {
                tracing::info!(request_id = %job.id, agent = ?job.claimed_by, "job offered but never started; it is approved again");
                let mut change = Change::to(job, now);
                // Unchanged, but announced as approved so waiting agents look again.
                change.status = Some(Status::Approved);
                change.audit.push(AuditEntry::system(AuditKind::OfferLapsed,
                    json!({ "agent": job.claimed_by }),
                ));
                change
            })
            .await?;
        let cutoffs = self
            .config
            .connections
            .iter()
            .map(|c| (c.name.to_string(), now - millis(c.pickup_timeout)))
            .collect();
        let unpicked = Overdue::Unpicked {
            cutoffs,
            otherwise: now - millis(crate::config::DEFAULT_PICKUP_TIMEOUT),
        };
        moved += self
            .store
            .sweep(&unpicked, SWEEP_BATCH, &|job| {
                tracing::warn!(request_id = %job.id, connection = %job.connection, "no agent picked the job up in time; failed");
                let result = ExecutionResult {
                    error: Some(NOT_PICKED_UP.into()),
                    ..ExecutionResult::default()
                };
                failure(job, result, json!({ "error": NOT_PICKED_UP }), now)
            })
            .await?;
        self.forget_old_signatures(now).await?;
        Ok(moved)
    }

    /// Waits until request `id` is newer than `version`, or `timeout` passes, and returns it.
    /// A waiter costs no database work while nothing happens: it reads the request, then sleeps
    /// until the change hub wakes it (a commit here, a NOTIFY or this replica's change poll), the
    /// request's deadline comes (to expire it), or the timeout. Answers at once when the server
    /// shuts down; clients simply wait again elsewhere.
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

            // In a block of its own, so a sleeping waiter keeps no copy of the request: thousands
            // may sleep at once.
            let expires_at = {
                let request = Box::pin(self.get(id)).await?;
                if request.version > version || tokio::time::Instant::now() >= deadline || closing {
                    return Ok(request);
                }
                (request.status == Status::Pending).then_some(request.expires_at)
            };
            let mut wake = deadline;
            if let Some(expires_at) = expires_at {
                let until_expiry = (expires_at - self.now().await?).max(0) as u64;
                wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(until_expiry));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.changes.closed() => closing = true,
            }
        }
    }

    /// The connections agent `agent` may claim jobs of: those the config assigns to it, or the
    /// ones it `asked` for, each of which must be assigned to it.
    pub fn connections_for(
        &self,
        agent: &str,
        asked: Option<Vec<ConnectionName>>,
    ) -> Result<Vec<ConnectionName>> {
        let assigned: Vec<ConnectionName> = self
            .config
            .connections
            .iter()
            .filter(|c| c.agent.as_deref() == Some(agent))
            .map(|c| c.name.clone())
            .collect();
        let Some(asked) = asked else {
            return Ok(assigned);
        };
        if let Some(other) = asked.iter().find(|c| !assigned.contains(c)) {
            return Err(Error::Forbidden(format!(
                "connection {:?} is not assigned to agent {agent} in the server's config",
                other.as_str()
            )));
        }
        Ok(asked)
    }

    /// Request `id`'s audit events, oldest first; `not_found` for an unknown request (and an
    /// overdue one is expired first, as any read does).
    pub async fn audit_trail(&self, id: &str) -> Result<Vec<crate::audit::AuditEvent>> {
        self.get(id).await?;
        Ok(self.store.audit_events(Some(id)).await?)
    }

    /// How many writes this replica's store has yet to commit: how far behind its writer is.
    pub fn writes_waiting(&self) -> usize {
        self.store.writes_waiting()
    }

    /// Whether this replica can serve: its database answers and its writer runs.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// The API token `token` and its SHA-256; `unauthenticated` for an unknown, revoked or
    /// expired one (an expired one says so, and how to get another).
    pub async fn authenticate(&self, token: &str) -> Result<(crate::store::ActiveToken, String)> {
        let digest = crate::token::digest(token);
        let active = self
            .store
            .find_token(&digest)
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown or revoked token".into()))?;
        if let Some(at) = active.terms.expires_at.filter(|&at| at <= self.clock.now()) {
            return Err(Error::Unauthenticated(format!(
                "this token expired at {}; log in again (`hoop login --url {}`), or ask an admin for a new token",
                crate::domain::rfc3339(at),
                self.public_url(),
            )));
        }
        Ok((active, digest))
    }

    /// Offers agent `agent` the oldest approved job of `connections`, waiting up to `timeout`. The
    /// job stays `approved` until the agent starts it with [`Hoop::start`] and the offer's id; an
    /// offer not started within [`OFFER_TIME`] returns to `approved`, so an agent that stops (or
    /// never hears the reply) before running anything loses no job. `token_sha256` is the caller's
    /// token, re-checked by the claim itself (`None` only for the in-process agent).
    pub async fn claim(
        &self,
        agent: &str,
        token_sha256: Option<&str>,
        connections: &[ConnectionName],
        timeout: Duration,
    ) -> Result<Option<AccessRequest>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changes.jobs().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.now().await?;
            let claim = Claim {
                agent: agent.to_string(),
                token_sha256: token_sha256.map(str::to_string),
                connections: connections
                    .iter()
                    .map(|name| (name.to_string(), now - self.pickup_ms(name)))
                    .collect(),
                now,
                offer: hex::encode(rand::random::<[u8; 16]>()),
                offer_until: now + millis(OFFER_TIME),
            };
            if let Some(job) = self.store.claim_next(&claim).await? {
                tracing::info!(request_id = %job.id, agent, "job offered");
                return Ok(Some(job));
            }
            if let Some(digest) = token_sha256
                && self
                    .store
                    .find_token(digest)
                    .await?
                    .is_none_or(|t| t.terms.expired(self.clock.now()))
            {
                return Err(Error::Unauthenticated(
                    "unknown, revoked or expired token".into(),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            let next = deadline.min(tokio::time::Instant::now() + CLAIM_POLL);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changes.closed() => return Ok(None),
            }
        }
    }

    /// Starts job `id` that `agent` was offered as `offer`: from here on it is `running` and the
    /// agent may run it. Refused (`already_decided`) when the offer lapsed or the job was
    /// cancelled meanwhile; the agent must then not run anything. Asking again with the same offer
    /// after a lost reply answers with the running job.
    pub async fn start(&self, agent: &str, id: &str, offer: &str) -> Result<AccessRequest> {
        for _ in 0..MAX_ATTEMPTS {
            let job = self.fetch(id).await?;
            let mine = job.offer.as_deref() == Some(offer);
            if job.claimed_by.as_deref() != Some(agent) {
                return Err(Error::AlreadyDecided(format!(
                    "job {id} is not offered to agent {agent} (any more); do not run it"
                )));
            }
            if mine && job.status == Status::Running {
                return Ok(job);
            }
            if !mine || job.status != Status::Approved {
                return Err(Error::AlreadyDecided(format!(
                    "the offer of job {id} was withdrawn before it started (the job is {}); do not run it",
                    job.status
                )));
            }
            let now = self.now().await?;
            let mut change = Change::to(&job, now);
            change.status = Some(Status::Running);
            change.lease_until = Some(now + self.lease_ms());
            change.audit.push(AuditEntry {
                kind: AuditKind::Started,
                actor: agent.to_string(),
                channel: Surface::Agent,
                detail: json!({ "lease_until": crate::domain::rfc3339(now + self.lease_ms()) }),
            });
            announce(&mut change, &job, &[Event::Running]);
            match self.store.apply(&change).await {
                Ok(()) => {
                    tracing::info!(request_id = %id, agent, "job started");
                    return Ok(change.applied_to(job));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(anyhow::anyhow!("job {id} kept changing")))
    }

    fn lease_ms(&self) -> i64 {
        millis(self.job_lease())
    }

    /// The pickup timeout of connection `name` in milliseconds.
    fn pickup_ms(&self, name: &ConnectionName) -> i64 {
        millis(
            self.config
                .connection(name)
                .map_or(crate::config::DEFAULT_PICKUP_TIMEOUT, |c| c.pickup_timeout),
        )
    }

    /// Extends the lease of a job `agent` is running.
    pub async fn heartbeat(&self, agent: &str, id: &str) -> Result<AccessRequest> {
        for _ in 0..MAX_ATTEMPTS {
            let job = self.running_job(agent, id).await?;
            let now = self.now().await?;
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
            let now = self.now().await?;
            let late = job.status == Status::Failed
                && job.claimed_by.as_deref() == Some(agent)
                && job.result.as_ref().and_then(|r| r.error.as_deref()) == Some(AGENT_LOST);
            if late {
                // The job was given up for lost, but its agent did finish. Its outcome is kept
                // in the audit trail; the status stays failed, as already announced. One late
                // result per job: the compare-and-set below bumps the version, so of two racing
                // late reports the second re-reads and finds the first here.
                let filed = self.store.audit_events(Some(id)).await?;
                if filed.iter().any(|e| e.kind == "late_result") {
                    return Err(Error::AlreadyDecided(format!(
                        "job {id} already has its late result"
                    )));
                }
                let mut change = Change::to(&job, now);
                change.audit.push(AuditEntry {
                    kind: AuditKind::LateResult,
                    actor: agent.to_string(),
                    channel: Surface::Agent,
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
            let (status, event) = if result.error.is_some() {
                (Status::Failed, Event::Failed)
            } else {
                (Status::Executed, Event::Executed)
            };
            let mut change = Change::to(&job, now);
            change.status = Some(status);
            change.audit.push(AuditEntry {
                kind: if status == Status::Failed {
                    AuditKind::Failed
                } else {
                    AuditKind::Executed
                },
                actor: agent.to_string(),
                channel: Surface::Agent,
                detail: result_summary(&result),
            });
            change.result = Some(result.clone());
            announce(&mut change, &job, &[event]);
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

/// The change that expires a pending `request` at `now`.
fn expiry(request: &AccessRequest, now: Millis) -> Change {
    let mut change = Change::to(request, now);
    change.status = Some(Status::Expired);
    change.decided_at = Some(now);
    change.audit.push(AuditEntry::system(
        AuditKind::Expired,
        json!({ "expires_at": crate::domain::rfc3339(request.expires_at) }),
    ));
    announce(&mut change, request, &[Event::Expired]);
    change
}

/// The change a permitted decision makes, with its audit events and outbox entries.
fn decision_change(
    request: &AccessRequest,
    actor: &Identity,
    outcome: Outcome,
    channel: Surface,
    now: Millis,
) -> Change {
    let mut change = Change::to(request, now);
    // The approval deadline guards decisions on pending requests; withdrawing an approved job
    // that has not started is allowed after it.
    if request.status == Status::Pending {
        change.before_deadline = Some(now);
    }
    let audit = |kind: AuditKind, detail| AuditEntry {
        kind,
        actor: actor.email.to_string(),
        channel,
        detail,
    };
    match outcome {
        Outcome::GroupApproved { group, completes } => {
            change
                .audit
                .push(audit(AuditKind::GroupApproved, json!({ "group": group })));
            change.group_approval = Some(GroupDecision {
                group,
                by: actor.email.to_string(),
                via: channel.as_str().to_string(),
            });
            if completes {
                change.status = Some(Status::Approved);
                change.decided_at = Some(now);
                change.audit.push(AuditEntry::system(
                    AuditKind::Approved,
                    json!({ "reason": "every approval group approved" }),
                ));
                announce(
                    &mut change,
                    request,
                    &[Event::GroupApproved, Event::Approved],
                );
            } else {
                announce(&mut change, request, &[Event::GroupApproved]);
            }
        }
        Outcome::Rejected { reason } => {
            change
                .audit
                .push(audit(AuditKind::Rejected, json!({ "reason": reason })));
            change.status = Some(Status::Rejected);
            change.decided_at = Some(now);
            change.rejection = Some(Rejection {
                by: actor.email.to_string(),
                reason,
                at: now,
                via: channel.as_str().to_string(),
            });
            announce(&mut change, request, &[Event::Rejected]);
        }
        Outcome::Cancelled => {
            change.audit.push(audit(AuditKind::Cancelled, json!({})));
            change.status = Some(Status::Cancelled);
            change.decided_at = Some(now);
            announce(&mut change, request, &[Event::Cancelled]);
        }
    }
    change
}

/// The change that fails `job` with `result`, as hoopbot itself decided (lost agent, no pickup).
fn failure(
    job: &AccessRequest,
    result: ExecutionResult,
    detail: serde_json::Value,
    now: Millis,
) -> Change {
    let mut change = Change::to(job, now);
    change.status = Some(Status::Failed);
    change.result = Some(result);
    change
        .audit
        .push(AuditEntry::system(AuditKind::Failed, detail));
    announce(&mut change, job, &[Event::Failed]);
    change
}

/// `duration` in milliseconds, saturating far beyond any real deadline.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Announces `events` (in order) of `change` to `request`, once every field of the change is set:
/// each outbox entry carries the request as it is right after the change, so a delivery made any
/// time later still shows that state, and its version.
fn announce(change: &mut Change, request: &AccessRequest, events: &[Event]) {
    let after = Arc::new(change.applied_to(request.clone()));
    change
        .outbox
        .extend(events.iter().map(|what| event(*what, &after)));
}

/// An outbox entry announcing `what` happened, with the request right after it.
fn event(what: Event, request: &Arc<AccessRequest>) -> OutboxEntry {
    OutboxEntry {
        topic: what.as_str().to_string(),
        request: request.clone(),
    }
}
