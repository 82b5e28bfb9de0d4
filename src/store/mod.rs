//! Storage: one [`Store`] trait, implemented for SQLite (the embedded default) and Postgres (for
//! several replicas). Both share their SQL through [`sql`]; only connection set-up, migrations and a
//! few clauses differ.
//!
//! Every state change goes through [`Store::apply`]: a compare-and-set on the request's version that
//! commits the change, its audit events and its outbox entries in one transaction, or nothing.
//! Submissions and decisions are group-committed: one writer per store commits the changes of
//! many callers in one transaction ([`group_commit`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditKey, AuditKind, Head};
use crate::changes::ChangeHub;
use crate::domain::{AccessRequest, Email, ExecutionResult, Millis, Rejection, Status, Surface};

#[macro_use]
mod sql;
#[macro_use]
mod accounts;
#[macro_use]
mod deliveries;
#[macro_use]
mod sessions;
#[macro_use]
mod signatures;
mod change_poll;
mod group_commit;
mod postgres;
mod snapshot;
mod sqlite;
mod token_cache;
mod write_plan;

pub use accounts::{Accounts, LinkedAccount, Redeemed};
pub use change_poll::{ChangePoll, poll_forever};
pub use deliveries::{
    AttemptRecord, Attempted, Deliveries, Delivery, DeliveryRecord, DeliveryState,
    DestinationStats, Finished, Leases, Next, PostedMessage, Route, Router, Shares,
};
pub use postgres::PostgresStore;
pub use sessions::{CliGrant, STEP_TTL as SIGN_IN_STEP_TTL, Sessions, SignInAttempt, WebSession};
pub use signatures::{Sighting, Signatures};
pub use sqlite::SqliteStore;
pub use token_cache::TOKEN_TTL;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request changed since it was read; re-read and decide again.
    #[error("the request changed concurrently")]
    Conflict,
    /// The signed request a decision came with was seen before: a replay, and nothing was done.
    #[error("this signed request was already received")]
    Replayed,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Appending to the audit trail needs the chain's key, and none was configured.
    #[error("no audit key: set [server] audit_key (e.g. \"${{HOOP_AUDIT_KEY}}\")")]
    NoAuditKey,
    /// The store's writer has stopped (the server is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The database could not be reached for a group commit this write was part of.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The database refused what was asked (a constraint, a trigger, a corrupt row), as opposed to
    /// not being reached at all: the connection is still good, and other writes may succeed.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Database(sqlx::Error::Database(_))
                | StoreError::Corrupt(_)
                | StoreError::NoAuditKey
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A request as first stored.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: String,
    pub connection: String,
    pub command: String,
    pub command_sha256: String,
    pub requester: String,
    pub justification: Option<String>,
    pub status: Status,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub decided_at: Option<Millis>,
    pub approval_groups: Vec<String>,
    /// Why it is approved without review, if it is.
    pub auto_approval: Option<crate::domain::AutoApproval>,
}

impl NewRequest {
    /// The request as [`Store::insert_request`] stores it: version 1, every group pending. The
    /// submitter's reply is built from this rather than read back.
    pub fn stored(self) -> AccessRequest {
        AccessRequest {
            approval_groups: self
                .approval_groups
                .into_iter()
                .map(|group| crate::domain::GroupApproval {
                    group,
                    status: crate::domain::GroupStatus::Pending,
                    decided_by: None,
                    decided_at: None,
                    via: None,
                })
                .collect(),
            id: self.id,
            connection: self.connection,
            command: self.command,
            command_sha256: self.command_sha256,
            requester: self.requester,
            justification: self.justification,
            status: self.status,
            created_at: self.created_at,
            expires_at: self.expires_at,
            decided_at: self.decided_at,
            version: 1,
            rejection: None,
            result: None,
            claimed_by: None,
            auto_approval: self.auto_approval,
            offer: None,
        }
    }
}

/// An audit event to append; the store fills in sequence, request, time and hashes.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub kind: AuditKind,
    pub actor: String,
    pub channel: Surface,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// An event hoopbot itself caused (policy, expiry, lost agents), not a person or an agent.
    pub fn system(kind: AuditKind, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            kind,
            actor: "hoopbot".into(),
            channel: Surface::System,
            detail,
        }
    }
}

/// An audit event about something other than a request — a chat account (`slack:U123`) or a
/// token (`token:<id>`) — kept under that subject in place of a request id.
#[derive(Debug, Clone)]
pub struct SubjectEvent {
    pub subject_id: String,
    pub entry: AuditEntry,
}

/// The audit event a change to accounts or tokens makes of each row it changed (the account
/// linked or unlinked, each token revoked), appended in the change's own transaction.
pub type AuditOf<'a, T> = &'a (dyn Fn(&T) -> SubjectEvent + Send + Sync);

/// A message for the outbox workers (chat cards, webhooks).
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub topic: String,
    /// The request as it is right after the change, shared by the entries of one change. Kept
    /// (see [`OutboxEntry::snapshot`]) only once some destination exists.
    pub request: Arc<AccessRequest>,
}

impl OutboxEntry {
    /// The payload a delivery is made from: the request right after the change, and its
    /// version, as JSON text.
    pub fn snapshot(&self) -> String {
        snapshot::write(&self.request)
    }
}

/// A committed state change as the change poll sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The outbox entry's id: grows with every change.
    pub seq: i64,
    pub request_id: String,
    /// The status the change moved the request to, when the entry says.
    pub status: Option<Status>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub request_id: String,
    pub topic: String,
    /// `None` for an event written while no destination existed: it is never delivered.
    pub payload: Option<serde_json::Value>,
    pub created_at: Millis,
    pub attempts: i64,
    pub delivered_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// One compare-and-set on a request: applies only if the request is still at `expected_version`
/// and `expected_status`.
#[derive(Debug, Clone)]
pub struct Change {
    pub request_id: String,
    pub expected_version: i64,
    pub expected_status: Status,
    pub at: Millis,
    pub status: Option<Status>,
    pub decided_at: Option<Millis>,
    pub group_approval: Option<GroupDecision>,
    pub rejection: Option<Rejection>,
    pub result: Option<ExecutionResult>,
    /// Extends a running job's lease (heartbeats).
    pub lease_until: Option<Millis>,
    /// Applies only while the request's deadline is after this time: a decision made at `at`
    /// must not land on a request that has expired meanwhile, swept or not.
    pub before_deadline: Option<Millis>,
    pub audit: Vec<AuditEntry>,
    pub outbox: Vec<OutboxEntry>,
}

impl Change {
    /// A change to `request` as it was read, with nothing set yet.
    pub fn to(request: &AccessRequest, at: Millis) -> Change {
        Change {
            request_id: request.id.clone(),
            expected_version: request.version,
            expected_status: request.status,
            at,
            status: None,
            decided_at: None,
            group_approval: None,
            rejection: None,
            result: None,
            lease_until: None,
            before_deadline: None,
            audit: Vec::new(),
            outbox: Vec::new(),
        }
    }
}

impl Change {
    /// `request` as it is once this change has committed. The compare-and-set guarantees the stored
    /// row went from exactly `request` to exactly this, so callers can answer without re-reading.
    pub fn applied_to(&self, mut request: AccessRequest) -> AccessRequest {
        request.version += 1;
        if let Some(status) = self.status {
            request.status = status;
        }
        if let Some(at) = self.decided_at {
            request.decided_at = Some(at);
        }
        if let Some(decision) = &self.group_approval
            && let Some(group) = request
                .approval_groups
                .iter_mut()
                .find(|g| g.group == decision.group)
        {
            group.status = crate::domain::GroupStatus::Approved;
            group.decided_by = Some(decision.by.clone());
            group.decided_at = Some(self.at);
            group.via = Some(decision.via.clone());
        }
        if let Some(rejection) = &self.rejection {
            request.rejection = Some(rejection.clone());
        }
        if let Some(result) = &self.result {
            request.result = Some(result.clone());
        }
        request
    }
}

#[derive(Debug, Clone)]
pub struct GroupDecision {
    pub group: String,
    pub by: String,
    pub via: String,
}

/// Which requests to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub connection: Option<String>,
    pub requester: Option<String>,
    /// Only requests still waiting for one of these groups' approval ("waiting for me").
    pub awaiting: Option<Vec<String>>,
    /// Only requests with ids below this one (ids grow with time).
    pub before_id: Option<String>,
    pub limit: i64,
}

/// Which audit events a page of the audit log shows: each filter given must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The subject: a request's id, or `token:…`, `slack:…`.
    pub request_id: Option<String>,
    pub actor: Option<String>,
    pub kind: Option<String>,
    /// Only events before this sequence number (the next page of older ones).
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSubject {
    User(Email),
    Agent(String),
}

/// Which tokens to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The one token with this SHA-256.
    Digest(String),
    /// Every token of a user or agent.
    Subject(TokenSubject),
}

/// What is known of an issued token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's SHA-256 (not a secret: the token cannot be recovered from it).
    pub sha256: String,
    pub subject: TokenSubject,
    pub terms: TokenTerms,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// What a token carries beside its subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTerms {
    /// When it stops working on its own; `None`: when revoked.
    pub expires_at: Option<Millis>,
    /// The groups the identity provider said its holder is in when it was made by single
    /// sign-on; `None` for a token made by hand.
    pub claimed_groups: Option<BTreeSet<String>>,
}

impl TokenTerms {
    pub fn expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A token not revoked (it may have expired: whoever holds it is told so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveToken {
    pub subject: TokenSubject,
    pub terms: TokenTerms,
}

/// An agent asking for a job: the oldest approved, unoffered request of its connections is offered
/// to it until `offer_until`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub agent: String,
    /// The SHA-256 of the agent's token, re-checked (unrevoked, this agent's) in the claiming
    /// statement itself; `None` for the server's own in-process agent, which has no token.
    pub token_sha256: Option<String>,
    /// The connections asked for, each with its pickup cutoff: only jobs approved after it are
    /// handed out (older ones have missed their pickup deadline).
    pub connections: Vec<(String, Millis)>,
    pub now: Millis,
    /// The offer's id; only the agent that received it can start the job.
    pub offer: String,
    pub offer_until: Millis,
}

/// Overdue requests of one kind, for the sweeper.
#[derive(Debug, Clone)]
pub enum Overdue {
    /// Pending requests whose deadline has passed.
    Pending { now: Millis },
    /// Running jobs whose agent stopped heartbeating.
    LostJobs { now: Millis },
    /// Offered jobs that no agent started in time; they return to unoffered `approved`.
    LapsedOffers { now: Millis },
    /// Unoffered approved jobs approved at or before their connection's cutoff, or before
    /// `otherwise` for connections not listed (no longer configured).
    Unpicked {
        cutoffs: Vec<(String, Millis)>,
        otherwise: Millis,
    },
}

/// What a decision makes of its request as the writer reads it, inside the transaction that
/// applies it: the change to apply, or `None` to leave the request as it is. Pure, and may be
/// called more than once.
pub type Decide = Box<dyn Fn(&AccessRequest) -> Option<Change> + Send + Sync>;

/// How the sweeper moves one overdue request: the change (status, result, audit, outbox) to
/// apply to it as read.
pub type SweepStep<'a> = &'a (dyn Fn(&AccessRequest) -> Change + Send + Sync);

#[async_trait]
pub trait Store: Deliveries + Accounts + Signatures + Sessions + Send + Sync + 'static {
    /// Runs pending migrations, then reads whether a delivery destination exists (so the
    /// writer knows whether entries need their snapshots).
    async fn migrate(&self) -> StoreResult<()>;
    /// Checks the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// How many writes this store's writer has queued or is committing now: how far behind it
    /// is (none when it keeps up).
    fn writes_waiting(&self) -> usize;
    /// The time deadlines are measured by: the database's clock on Postgres (shifted by
    /// `clock`'s offset, which tests move), so every replica agrees whatever its own clock says;
    /// `clock` itself on SQLite, which has a single process.
    async fn now(&self, clock: &crate::domain::Clock) -> StoreResult<Millis>;

    /// Stores a new request with its first audit events and outbox entries, atomically.
    async fn insert_request(
        &self,
        new: &NewRequest,
        audit: &[AuditEntry],
        outbox: &[OutboxEntry],
    ) -> StoreResult<()>;
    async fn get_request(&self, id: &str) -> StoreResult<Option<AccessRequest>>;
    async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<AccessRequest>>;
    /// Applies `change` if the request is unchanged since it was read; [`StoreError::Conflict`] if not.
    async fn apply(&self, change: &Change) -> StoreResult<()>;
    /// Reads request `id` in the writer's transaction and applies the change `decide` makes of
    /// it, if any, in that same transaction; returns the request as read (`None`: no such
    /// request). [`StoreError::Conflict`] when another replica changed it in between. With
    /// `once` (a chat request's signature, seen now), the change is made only if that signature
    /// is seen for the first time, and the sighting is recorded in the same transaction; [`StoreError::Replayed`]
    /// if it was seen before.
    async fn read_and_apply(
        &self,
        id: &str,
        decide: Decide,
        once: Option<Sighting>,
    ) -> StoreResult<Option<AccessRequest>>;

    /// Moves up to `limit` requests that are `overdue`, each by the change `step` makes of it, in
    /// one transaction that holds them: on Postgres rows another replica is moving are skipped
    /// (`for update skip locked`), on SQLite the transaction takes the write lock first. So
    /// replicas sweeping at once split the work instead of repeating it. Returns how many moved.
    async fn sweep(&self, overdue: &Overdue, limit: i64, step: SweepStep<'_>)
    -> StoreResult<usize>;
    /// Atomically offers the oldest approved, unoffered request of `claim.connections` to
    /// `claim.agent` (it stays `approved` until the agent starts it); at most one caller can
    /// ever hold a given offer. `None` also when the claim's token is revoked.
    async fn claim_next(&self, claim: &Claim) -> StoreResult<Option<AccessRequest>>;

    /// Audit events of one request, or of all requests, in chain order.
    async fn audit_events(&self, request_id: Option<&str>) -> StoreResult<Vec<AuditEvent>>;
    /// A page of the audit log: the events `filter` picks, newest first.
    async fn audit_log(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
    /// The last audit event, if any.
    async fn last_audit_event(&self) -> StoreResult<Option<AuditEvent>>;
    /// The chain head: the last event's sequence number and hash.
    async fn audit_head(&self) -> StoreResult<Head>;

    /// State changes committed after outbox entry `after` (by any replica or process), oldest
    /// first: what each replica's change poll relays to its waiters.
    async fn changes_since(&self, after: i64, limit: i64) -> StoreResult<Vec<Announced>>;
    /// The newest outbox entry's sequence number (0 when there is none).
    async fn last_change(&self) -> StoreResult<i64>;

    async fn outbox(&self) -> StoreResult<Vec<OutboxRow>>;

    /// Stores a new token (its SHA-256) for `subject`, with `audit`, in one transaction.
    async fn insert_token(
        &self,
        sha256: &str,
        subject: &TokenSubject,
        terms: &TokenTerms,
        now: Millis,
        audit: &[SubjectEvent],
    ) -> StoreResult<()>;
    async fn find_token(&self, sha256: &str) -> StoreResult<Option<ActiveToken>>;
    /// Revokes the tokens `which` names, with the event `audit` makes of each, in one
    /// transaction; returns those that were still active.
    async fn revoke_tokens(
        &self,
        which: &TokenSelector,
        now: Millis,
        audit: AuditOf<'_, TokenRecord>,
    ) -> StoreResult<Vec<TokenRecord>>;
    /// Every token ever issued (never the secret), oldest first.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;
}

/// The whole audit chain as stored, and whether it verifies under `key` and `checkpoints`.
pub struct ChainCheck {
    pub events: Vec<AuditEvent>,
    pub head: Head,
    pub verdict: Result<(), crate::audit::ChainError>,
}

/// Reads the whole chain and its head and verifies them (`crate::audit::verify`): what
/// `hoop audit verify` and the admin's audit log page both say.
pub async fn check_audit_chain(
    store: &dyn Store,
    key: &AuditKey,
    checkpoints: &[crate::audit::Checkpoint],
) -> StoreResult<ChainCheck> {
    let events = store.audit_events(None).await?;
    let head = store.audit_head().await?;
    let verdict = crate::audit::verify(key, &events, &head, checkpoints);
    Ok(ChainCheck {
        events,
        head,
        verdict,
    })
}

/// Opens the store named by `database_url` (`sqlite://…` or `postgres://…`). Without
/// `audit_key` the store can read everything but append nothing to the audit trail.
pub async fn connect(
    database_url: &str,
    changes: Arc<ChangeHub>,
    audit_key: Option<AuditKey>,
) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(
            SqliteStore::connect(database_url, changes, audit_key).await?,
        ))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(
            PostgresStore::connect(database_url, changes, audit_key).await?,
        ))
    } else {
        // Not the URL itself: it may carry a password.
        anyhow::bail!("database_url must start with sqlite:// or postgres://")
    }
}
