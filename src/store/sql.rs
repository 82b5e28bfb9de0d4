//! The SQL both backends share. It is written once, as a macro instantiated for each backend's
//! concrete sqlx types: sqlx's generic database traits cannot express "a transaction of any backend"
//! without bounds that would drown the queries, and `sqlx::Any` cannot carry our types. Every query
//! uses `$n` placeholders, which SQLite and Postgres both accept.
//!
//! Dynamic SQL (wrapped in `AssertSqlSafe`) only ever splices in constants and `$n` placeholders;
//! values are always bound.
//!
//! Writes that touch many rows at once pass them as one JSON array (see [`json_array`]), so one
//! statement serves any number of rows and stays prepared.
//!
//! Each backend provides `run_migrations`, `announce` (called after every commit, so other
//! replicas hear of the change) and `clock` (the time deadlines are measured by), and says how a decision's deadline is checked (`decision_time`, in terms of the
//! decision's own time `$12`).

/// A request joined with its approval groups, one row per group; callers add `where` and
/// `order by … a.position`.
pub(super) const REQUEST_WITH_GROUPS: &str = "select r.id, r.connection, r.command, \
    r.command_sha256, r.requester, r.justification, r.status, r.created_at, r.expires_at, \
    r.decided_at, r.version, r.rejected_by, r.rejection_reason, r.rejected_at, r.rejected_via, \
    r.result, r.agent, r.offer, r.auto_approval, a.group_name, a.status as group_status, \
    a.decided_by as group_decided_by, a.decided_at as group_decided_at, a.via as group_via \
    from access_request r left join access_request_approval a on a.request_id = r.id";

pub(super) const REQUEST_COLUMNS: &str = "id, connection, command, command_sha256, requester, \
    justification, status, created_at, expires_at, decided_at, version, rejected_by, \
    rejection_reason, rejected_at, rejected_via, result, agent, offer, auto_approval";

/// `$first, $first+1, …` for `count` values, for `in (…)` lists.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows for one set-based statement, as a JSON array: the backend's `json_rows` reads it (`$1`)
/// as a table `c` of `value` (each row's object) and `key` (its position), taking at most `$2`
/// rows. The limit is there for Postgres's planner, which otherwise assumes a JSON array holds a
/// hundred rows and scans whole tables instead of looking each row up by its key.
pub(super) fn json_array<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows serialize")
}

/// One row of each of the writer's set-based statements, as its JSON array carries it.
pub(super) mod rows {
    use serde::Serialize;

    use crate::domain::Millis;

    #[derive(Serialize)]
    pub struct NewRequest<'a> {
        pub id: &'a str,
        pub connection: &'a str,
        pub command: &'a str,
        pub command_sha256: &'a str,
        pub requester: &'a str,
        pub justification: Option<&'a str>,
        pub status: &'static str,
        pub created_at: Millis,
        pub expires_at: Millis,
        pub decided_at: Option<Millis>,
        /// JSON text, as the column keeps it.
        pub auto_approval: Option<String>,
    }

    #[derive(Serialize)]
    pub struct Id<'a> {
        pub id: &'a str,
    }

    #[derive(Serialize)]
    pub struct Sighting<'a> {
        pub sha256: &'a str,
        pub at: i64,
    }

    #[derive(Serialize)]
    pub struct Group<'a> {
        pub id: &'a str,
        pub position: usize,
        pub group: &'a str,
    }

    #[derive(Serialize)]
    pub struct Change<'a> {
        pub id: &'a str,
        pub expected_version: i64,
        pub expected_status: &'static str,
        pub status: Option<&'static str>,
        pub decided_at: Option<Millis>,
        pub rejected_by: Option<&'a str>,
        pub rejection_reason: Option<&'a str>,
        pub rejected_at: Option<Millis>,
        pub rejected_via: Option<&'a str>,
        pub result: Option<String>,
        pub lease_until: Option<Millis>,
        pub before_deadline: Option<Millis>,
    }

    #[derive(Serialize)]
    pub struct Approval<'a> {
        pub id: &'a str,
        pub group: &'a str,
        pub by: &'a str,
        pub at: Millis,
        pub via: &'a str,
    }

    #[derive(Serialize)]
    pub struct Outbox<'a> {
        pub request_id: &'a str,
        pub topic: &'a str,
        pub payload: Option<&'a str>,
        pub at: Millis,
    }

    #[derive(Serialize)]
    pub struct Audit<'a> {
        pub seq: i64,
        pub request_id: &'a str,
        pub kind: &'a str,
        pub actor: &'a str,
        pub channel: &'a str,
        pub at: Millis,
        pub detail: String,
        pub prev_hash: &'a str,
        pub hash: &'a str,
    }
}

/// Whether any delivery destination exists yet, as this replica last saw. Until one does, an
/// outbox entry is written without its snapshot and as already fanned out: nothing will ever
/// deliver it (a destination receives the events from its start on), so no change pays for
/// serializing and storing its request. Once seen it stays seen: destinations are never removed.
/// Seen when this replica starts one, or when a write finds one (see `queue_outbox`).
#[derive(Default)]
pub(super) struct DestinationsSeen(std::sync::atomic::AtomicBool);

impl DestinationsSeen {
    pub(super) fn seen(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn see(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

macro_rules! sql_store {
    (
        $store:ty,
        $db:ty,
        claim_lock = $claim_lock:expr,
        json_rows = $json_rows:literal,
        decision_time = $decision_time:literal,
        write_begin = $write_begin:expr
    ) => {
        type DbRow = <$db as sqlx::Database>::Row;
        type Conn = <$db as sqlx::Database>::Connection;

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.run_migrations().await?;
                // A replica started after the first destination writes every entry with its
                // snapshot from its first write on, whatever its own configuration.
                if sqlx::query("select 1 from destination limit 1")
                    .fetch_optional(&self.pool)
                    .await?
                    .is_some()
                {
                    self.destinations.see();
                }
                Ok(())
            }

            fn writes_waiting(&self) -> usize {
                self.writes.waiting()
            }

            async fn ping(&self) -> StoreResult<()> {
                if self.writes.is_closed() {
                    return Err(StoreError::Closed);
                }
                sqlx::query("select 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn now(&self, clock: &$crate::domain::Clock) -> StoreResult<Millis> {
                self.clock(clock).await
            }

            #[tracing::instrument(skip_all, fields(request_id = %new.id), err)]
            async fn insert_request(
                &self,
                new: &NewRequest,
                audit: &[AuditEntry],
                outbox: &[OutboxEntry],
            ) -> StoreResult<()> {
                self.writes
                    .write(Write::Insert { new: Box::new(new.clone()), audit: audit.to_vec(), outbox: outbox.to_vec() })
                    .await
                    .map(drop)
            }

            async fn get_request(&self, id: &str) -> StoreResult<Option<AccessRequest>> {
                // The request and its approval groups in one query: one row per group.
                let sql = format!("{REQUEST_WITH_GROUPS} where r.id = $1 order by a.position");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?;
                Ok(requests_with_groups(&rows)?.pop())
            }

            async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<AccessRequest>> {
                // Only the filters given, each its own condition: `($1 is null or column = $1)`
                // would keep both backends off the (connection, id) and (requester, id) indexes.
                // "Waiting for me" reads the newest requests first and stops at the page: the
                // status is then an expression no index answers, so both backends walk the
                // primary key newest first instead of sorting every request of that status (an
                // index of its own would cost every submission and decision).
                let status = match filter.awaiting {
                    Some(_) => "status || '' = ",
                    None => "status = ",
                };
                let given = [
                    (status, filter.status.map(|s| s.as_str())),
                    ("connection = ", filter.connection.as_deref()),
                    ("requester = ", filter.requester.as_deref()),
                    ("id < ", filter.before_id.as_deref()),
                ];
                let given: Vec<(&str, &str)> = given
                    .into_iter()
                    .filter_map(|(condition, value)| Some((condition, value?)))
                    .collect();
                let mut conditions: Vec<String> = given
                    .iter()
                    .enumerate()
                    .map(|(i, (condition, _))| format!("{condition}${}", i + 1))
                    .collect();
                let awaiting = filter.awaiting.as_deref().unwrap_or_default();
                if filter.awaiting.is_some() {
                    // The groups' placeholders follow the limit's.
                    let groups = match awaiting.is_empty() {
                        true => "null".to_string(),
                        false => placeholders(given.len() + 2, awaiting.len()),
                    };
                    conditions.push(format!(
                        "exists (select 1 from access_request_approval a where a.request_id = \
                         access_request.id and a.status = 'pending' and a.group_name in ({groups}))"
                    ));
                }
                let filtered = match conditions.is_empty() {
                    true => String::new(),
                    false => format!(" where {}", conditions.join(" and ")),
                };
                let sql = format!(
                    "select {REQUEST_COLUMNS} from access_request{filtered} order by id desc limit ${}",
                    given.len() + 1
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (_, value) in &given {
                    query = query.bind(*value);
                }
                query = query.bind(filter.limit);
                for group in awaiting {
                    query = query.bind(group);
                }
                let rows = query.fetch_all(&self.pool).await?;
                self.with_approvals(rows).await
            }

            #[tracing::instrument(skip_all, fields(request_id = %change.request_id), err(level = "debug"))]
            async fn apply(&self, change: &Change) -> StoreResult<()> {
                self.writes.write(Write::Apply(Box::new(change.clone()))).await.map(drop)
            }

            #[tracing::instrument(skip_all, fields(request_id = %id), err(level = "debug"))]
            async fn read_and_apply(
                &self,
                id: &str,
                decide: Decide,
                once: Option<$crate::store::Sighting>,
            ) -> StoreResult<Option<AccessRequest>> {
                self.writes.write(Write::Decide { request_id: id.to_string(), decide, once }).await
            }

            #[tracing::instrument(skip_all, err)]
            async fn sweep(
                &self,
                overdue: &Overdue,
                limit: i64,
                step: SweepStep<'_>,
            ) -> StoreResult<usize> {
                // Which rows, in which order; the `$n` of the cutoffs follow the limit ($1).
                let (filter, order, times): (String, &str, Vec<(Option<&str>, Millis)>) = match overdue {
                    Overdue::Pending { now } => (
                        "status = 'pending' and expires_at <= $2".into(),
                        "expires_at",
                        vec![(None, *now)],
                    ),
                    Overdue::LostJobs { now } => (
                        "status = 'running' and lease_until <= $2".into(),
                        "lease_until",
                        vec![(None, *now)],
                    ),
                    Overdue::LapsedOffers { now } => (
                        "status = 'approved' and agent is not null and lease_until <= $2".into(),
                        "lease_until",
                        vec![(None, *now)],
                    ),
                    Overdue::Unpicked { cutoffs, otherwise } => {
                        let mut alternatives = Vec::new();
                        let mut times = Vec::new();
                        for (i, (connection, cutoff)) in cutoffs.iter().enumerate() {
                            alternatives.push(format!(
                                "(connection = ${} and decided_at <= ${})",
                                2 * i + 2,
                                2 * i + 3
                            ));
                            times.push((Some(connection.as_str()), *cutoff));
                        }
                        let rest = 2 * cutoffs.len() + 2;
                        let others = if cutoffs.is_empty() {
                            format!("decided_at <= ${rest}")
                        } else {
                            let listed = (0..cutoffs.len())
                                .map(|i| format!("${}", 2 * i + 2))
                                .collect::<Vec<_>>()
                                .join(", ");
                            format!("(connection not in ({listed}) and decided_at <= ${rest})")
                        };
                        alternatives.push(others);
                        times.push((None, *otherwise));
                        (
                            format!(
                                "status = 'approved' and agent is null and ({})",
                                alternatives.join(" or ")
                            ),
                            "decided_at",
                            times,
                        )
                    }
                };
                let bind = |sql: String| {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit);
                    for (connection, time) in &times {
                        if let Some(connection) = connection {
                            query = query.bind(*connection);
                        }
                        query = query.bind(*time);
                    }
                    query
                };
                // Most sweeps find nothing: a plain read says so without taking any lock (on
                // SQLite, the write lock the group-commit writer needs).
                let probe = format!("select id from access_request where {filter} limit $1");
                if bind(probe).fetch_optional(&self.pool).await?.is_none() {
                    return Ok(0);
                }
                let select = format!(
                    "select {REQUEST_COLUMNS} from access_request where {filter} \
                     order by {order}, id limit $1{}",
                    $claim_lock
                );
                let mut tx = self.pool.begin_with($write_begin).await?;
                let rows = bind(select).fetch_all(&mut *tx).await?;
                // A lapsed offer returns the job to nobody: it may be offered afresh.
                let release = if matches!(overdue, Overdue::LapsedOffers { .. }) {
                    ", agent = null, lease_until = null, offer = null"
                } else {
                    ""
                };
                let update = format!(
                    "update access_request set version = version + 1, \
                     status = coalesce($3, status), decided_at = coalesce($4, decided_at), \
                     result = coalesce($5, result){release} \
                     where id = $1 and version = $2"
                );
                // With their approval groups, so the change's outbox snapshot (what webhooks and
                // chat cards show of an expired request) is the whole request; read in this
                // transaction, which holds the rows (a group changes only with its request's row).
                let requests = with_approvals_on(&mut tx, rows).await?;
                let mut moved = Vec::new();
                for request in &requests {
                    let change = step(request);
                    let result = $crate::store::write_plan::result_json(&change)?;
                    // The rows are held by this transaction, so the version cannot have moved;
                    // checked all the same, so a row is never moved (and audited) twice.
                    let updated = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(&request.id)
                        .bind(request.version)
                        .bind(change.status.map(|s| s.as_str()))
                        .bind(change.decided_at)
                        .bind(result)
                        .execute(&mut *tx)
                        .await?;
                    if updated.rows_affected() != 1 {
                        continue;
                    }
                    self.record(&mut tx, &request.id, change.at, &change.audit, &change.outbox).await?;
                    moved.push((request.id.clone(), change.status));
                }
                tx.commit().await?;
                let count = moved.len();
                // Most sweeps move nothing: nothing to announce.
                if count > 0 {
                    announce_changes(&self.pool, &self.changes, moved);
                }
                Ok(count)
            }

            #[tracing::instrument(skip_all, fields(agent = %claim.agent), err)]
            async fn claim_next(&self, claim: &Claim) -> StoreResult<Option<AccessRequest>> {
                if claim.connections.is_empty() {
                    return Ok(None);
                }
                // Each connection with its pickup cutoff: `(connection = $n and decided_at > $n+1)`.
                let windows = (0..claim.connections.len())
                    .map(|i| format!("(connection = ${} and decided_at > ${})", 2 * i + 6, 2 * i + 7))
                    .collect::<Vec<_>>()
                    .join(" or ");
                // The token is re-checked in the claiming statement itself, so a token revoked
                // (or expired) while its long poll waited never receives a job.
                let sql = format!(
                    "update access_request set version = version + 1, \
                     agent = $1, lease_until = $2, offer = $3 \
                     where id = (select id from access_request where status = 'approved' \
                                 and agent is null and ({windows}) \
                                 order by decided_at, id limit 1{}) \
                     and status = 'approved' and agent is null \
                     and ($4 is null or exists (select 1 from api_token where token_sha256 = $4 \
                          and kind = 'agent' and subject = $1 and revoked_at is null \
                          and (expires_at is null or expires_at > $5))) \
                     returning id",
                    $claim_lock,
                );
                let mut tx = self.pool.begin().await?;
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&claim.agent)
                    .bind(claim.offer_until)
                    .bind(&claim.offer)
                    .bind(&claim.token_sha256)
                    .bind(claim.now);
                for (connection, cutoff) in &claim.connections {
                    query = query.bind(connection).bind(*cutoff);
                }
                let Some(row) = query.fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let id: String = row.try_get("id")?;
                let claimed = AuditEntry {
                    kind: $crate::audit::AuditKind::Claimed,
                    actor: claim.agent.clone(),
                    channel: $crate::domain::Surface::Agent,
                    detail: serde_json::json!({ "offer_until": $crate::domain::rfc3339(claim.offer_until) }),
                };
                self.record(&mut tx, &id, claim.now, &[claimed], &[]).await?;
                tx.commit().await?;
                announce_changes(&self.pool, &self.changes, vec![(id.clone(), None)]);
                self.get_request(&id).await
            }

            async fn audit_events(&self, request_id: Option<&str>) -> StoreResult<Vec<AuditEvent>> {
                const COLUMNS: &str = "select seq, request_id, kind, actor, channel, at, detail, prev_hash, hash from audit_event";
                // Two statements, not `$1 is null or request_id = $1`: with that, neither backend
                // uses the (request_id, seq) index, and one request's trail scans the whole chain.
                let rows = match request_id {
                    Some(id) => {
                        let sql = format!("{COLUMNS} where request_id = $1 order by seq");
                        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?
                    }
                    None => {
                        let sql = format!("{COLUMNS} order by seq");
                        sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?
                    }
                };
                rows.iter().map(audit_event).collect()
            }

            async fn audit_log(&self, filter: &$crate::store::AuditFilter) -> StoreResult<Vec<AuditEvent>> {
                // Only the filters given, as in `list_requests`: each then uses its own
                // (column, seq) index, newest first.
                let text = [
                    ("request_id = ", filter.request_id.as_deref()),
                    ("actor = ", filter.actor.as_deref()),
                    ("kind = ", filter.kind.as_deref()),
                ];
                let text: Vec<(&str, &str)> = text
                    .into_iter()
                    .filter_map(|(condition, value)| Some((condition, value?)))
                    .collect();
                let mut conditions: Vec<String> = text
                    .iter()
                    .enumerate()
                    .map(|(i, (condition, _))| format!("{condition}${}", i + 1))
                    .collect();
                if filter.before_seq.is_some() {
                    conditions.push(format!("seq < ${}", conditions.len() + 1));
                }
                let filtered = match conditions.is_empty() {
                    true => String::new(),
                    false => format!(" where {}", conditions.join(" and ")),
                };
                let sql = format!(
                    "select seq, request_id, kind, actor, channel, at, detail, prev_hash, hash \
                     from audit_event{filtered} order by seq desc limit ${}",
                    conditions.len() + 1
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (_, value) in &text {
                    query = query.bind(*value);
                }
                if let Some(before) = filter.before_seq {
                    query = query.bind(before);
                }
                let rows = query.bind(filter.limit).fetch_all(&self.pool).await?;
                rows.iter().map(audit_event).collect()
            }

            async fn last_audit_event(&self) -> StoreResult<Option<AuditEvent>> {
                let row = sqlx::query(
                    "select seq, request_id, kind, actor, channel, at, detail, prev_hash, hash \
                     from audit_event order by seq desc limit 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(audit_event).transpose()
            }

            async fn audit_head(&self) -> StoreResult<$crate::audit::Head> {
                let row = sqlx::query("select seq, hash, unkeyed_until from audit_head where id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::audit::Head {
                    seq: row.try_get("seq")?,
                    hash: row.try_get("hash")?,
                    unkeyed_until: row.try_get("unkeyed_until")?,
                })
            }

            async fn changes_since(&self, after: i64, limit: i64) -> StoreResult<Vec<Announced>> {
                let rows = sqlx::query(
                    "select id, request_id, topic from outbox where id > $1 order by id limit $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let topic: String = row.try_get("topic")?;
                        Ok(Announced {
                            seq: row.try_get("id")?,
                            request_id: row.try_get("request_id")?,
                            status: topic
                                .strip_prefix("access_request.")
                                .and_then(Status::parse),
                        })
                    })
                    .collect()
            }

            async fn last_change(&self) -> StoreResult<i64> {
                let last: Option<i64> = sqlx::query_scalar("select max(id) from outbox")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(last.unwrap_or(0))
            }

            async fn outbox(&self) -> StoreResult<Vec<OutboxRow>> {
                let rows = sqlx::query(
                    "select id, request_id, topic, payload, created_at, attempts, delivered_at, \
                     last_error from outbox order by id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let payload: Option<String> = row.try_get("payload")?;
                        Ok(OutboxRow {
                            id: row.try_get("id")?,
                            request_id: row.try_get("request_id")?,
                            topic: row.try_get("topic")?,
                            payload: payload
                                .map(|p| serde_json::from_str(&p))
                                .transpose()
                                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
                            created_at: row.try_get("created_at")?,
                            attempts: row.try_get("attempts")?,
                            delivered_at: row.try_get("delivered_at")?,
                            last_error: row.try_get("last_error")?,
                        })
                    })
                    .collect()
            }

            async fn insert_token(
                &self,
                sha256: &str,
                subject: &TokenSubject,
                terms: &TokenTerms,
                now: Millis,
                audit: &[SubjectEvent],
            ) -> StoreResult<()> {
                let (kind, name) = match subject {
                    TokenSubject::User(email) => ("user", email.as_str()),
                    TokenSubject::Agent(name) => ("agent", name.as_str()),
                };
                let claimed_groups = terms
                    .claimed_groups
                    .as_ref()
                    .map(|groups| serde_json::to_string(groups).expect("a set of strings serialises"));
                let mut tx = self.pool.begin_with($write_begin).await?;
                sqlx::query(
                    "insert into api_token (token_sha256, subject, kind, created_at, expires_at, claimed_groups) \
                     values ($1, $2, $3, $4, $5, $6)",
                )
                .bind(sha256)
                .bind(name)
                .bind(kind)
                .bind(now)
                .bind(terms.expires_at)
                .bind(claimed_groups)
                .execute(&mut *tx)
                .await?;
                self.append_subject_events(&mut tx, now, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_token(&self, sha256: &str) -> StoreResult<Option<ActiveToken>> {
                if let Some(token) = self.tokens.get(sha256) {
                    return Ok(Some(token));
                }
                let generation = self.tokens.generation();
                let checked_at = std::time::Instant::now();
                let row = sqlx::query(
                    "select subject, kind, expires_at, claimed_groups from api_token \
                     where token_sha256 = $1 and revoked_at is null",
                )
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
                let token = row
                    .map(|row| {
                        Ok::<_, StoreError>(ActiveToken {
                            subject: token_subject(&row)?,
                            terms: token_terms(&row)?,
                        })
                    })
                    .transpose()?;
                if let Some(token) = &token {
                    self.tokens.put(sha256, token, generation, checked_at);
                }
                Ok(token)
            }

            async fn revoke_tokens(
                &self,
                which: &TokenSelector,
                now: Millis,
                audit: AuditOf<'_, TokenRecord>,
            ) -> StoreResult<Vec<TokenRecord>> {
                let (digest, kind, subject) = match which {
                    TokenSelector::Digest(digest) => (Some(digest.as_str()), None, None),
                    TokenSelector::Subject(TokenSubject::User(email)) => (None, Some("user"), Some(email.as_str())),
                    TokenSelector::Subject(TokenSubject::Agent(name)) => (None, Some("agent"), Some(name.as_str())),
                };
                let mut tx = self.pool.begin_with($write_begin).await?;
                let rows = sqlx::query(
                    "update api_token set revoked_at = $1 where revoked_at is null \
                     and ($2 is null or token_sha256 = $2) and ($3 is null or kind = $3) \
                     and ($4 is null or subject = $4) \
                     returning token_sha256, subject, kind, created_at, revoked_at, expires_at, claimed_groups",
                )
                .bind(now)
                .bind(digest)
                .bind(kind)
                .bind(subject)
                .fetch_all(&mut *tx)
                .await?;
                let revoked = rows.iter().map(token_record).collect::<StoreResult<Vec<_>>>()?;
                let events: Vec<SubjectEvent> = revoked.iter().map(audit).collect();
                self.append_subject_events(&mut tx, now, &events).await?;
                tx.commit().await?;
                // At once here; other replicas when they hear of it (see `token_cache`).
                self.tokens.revoked();
                if !revoked.is_empty() {
                    announce_revocation(&self.pool).await;
                }
                Ok(revoked)
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
                let rows = sqlx::query(
                    "select token_sha256, subject, kind, created_at, revoked_at, expires_at, \
                     claimed_groups from api_token order by created_at, subject",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_record).collect()
            }
        }

        impl $store {
            /// Queues outbox entries and appends audit events to the hash chain, inside `conn`'s
            /// transaction.
            async fn record(
                &self,
                conn: &mut Conn,
                request_id: &str,
                at: Millis,
                audit: &[AuditEntry],
                outbox: &[OutboxEntry],
            ) -> StoreResult<()> {
                let outbox: Vec<_> = outbox.iter().map(|entry| (request_id, at, entry)).collect();
                queue_outbox(conn, &self.destinations, &outbox).await?;
                let audit: Vec<_> = audit.iter().map(|entry| (request_id, at, entry)).collect();
                append_audit_events(conn, self.audit_key.as_ref(), &audit).await
            }

            /// Appends events about accounts and tokens (`at`, in order) inside `conn`'s
            /// transaction. Links, unlinks and token changes are transactions of their own, not
            /// group-commit writes: they are rare, and what they answer (a redeemed code, the link
            /// removed, the tokens revoked) is no request's outcome, so the writer's plan would
            /// only grow for them. The chain stays one all the same: appending bumps its head row,
            /// which Postgres then holds locked until commit, and on SQLite these transactions
            /// begin with the write lock (`begin immediate`), taking turns with the writer's.
            async fn append_subject_events(
                &self,
                conn: &mut Conn,
                at: Millis,
                events: &[SubjectEvent],
            ) -> StoreResult<()> {
                let entries: Vec<_> =
                    events.iter().map(|event| (event.subject_id.as_str(), at, &event.entry)).collect();
                append_audit_events(conn, self.audit_key.as_ref(), &entries).await
            }

            /// Turns request rows into requests, loading their approval groups in one query.
            async fn with_approvals(&self, rows: Vec<DbRow>) -> StoreResult<Vec<AccessRequest>> {
                let mut conn = self.pool.acquire().await?;
                with_approvals_on(&mut conn, rows).await
            }
        }

        /// [`with_approvals`] on `conn` (a transaction's, to read what it holds).
        async fn with_approvals_on(conn: &mut Conn, rows: Vec<DbRow>) -> StoreResult<Vec<AccessRequest>> {
            let mut requests = rows.iter().map(request_from_row).collect::<StoreResult<Vec<_>>>()?;
            if requests.is_empty() {
                return Ok(requests);
            }
            let sql = format!(
                "select request_id, group_name, status, decided_by, decided_at, via \
                 from access_request_approval where request_id in ({}) order by request_id, position",
                placeholders(1, requests.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for request in &requests {
                query = query.bind(&request.id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let request_id: String = row.try_get("request_id")?;
                let approval = group_approval(
                    row.try_get("group_name")?,
                    row.try_get("status")?,
                    row.try_get("decided_by")?,
                    row.try_get("decided_at")?,
                    row.try_get("via")?,
                )?;
                if let Some(request) = requests.iter_mut().find(|r| r.id == request_id) {
                    request.approval_groups.push(approval);
                }
            }
            Ok(requests)
        }

        /// The group-commit writer: one connection of its own, committing many callers' writes
        /// per transaction (see `group_commit`).
        struct Writer {
            pool: sqlx::Pool<$db>,
            /// Opened on first use, and again after an error that may have broken it.
            connection: Option<Conn>,
            changes: Arc<ChangeHub>,
            audit_key: Option<AuditKey>,
            destinations: Arc<$crate::store::sql::DestinationsSeen>,
            /// The server's runtime, where announcements are sent from (the pool lives there).
            server: tokio::runtime::Handle,
        }

        impl Writer {
            fn start(
                pool: &sqlx::Pool<$db>,
                changes: &Arc<ChangeHub>,
                audit_key: &Option<AuditKey>,
                destinations: &Arc<$crate::store::sql::DestinationsSeen>,
            ) -> GroupCommit {
                GroupCommit::start(Writer {
                    pool: pool.clone(),
                    connection: None,
                    changes: changes.clone(),
                    audit_key: audit_key.clone(),
                    destinations: destinations.clone(),
                    server: tokio::runtime::Handle::current(),
                })
            }

            /// Commits `writes` in one transaction, one statement per kind of row, as
            /// `write_plan` lays them out: new requests and their groups, the requests decisions
            /// are made on (one read), every compare-and-set (one `update … from` returning the
            /// ids that won), the winners' group approvals, outbox entries, then the audit chain,
            /// whose head stays locked until commit, so it comes last.
            async fn try_commit(&mut self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
                use sqlx::{ConnectOptions, Connection};
                let conn = match &mut self.connection {
                    Some(conn) => conn,
                    None => self.connection.insert(self.pool.connect_options().connect().await?),
                };
                let mut tx = conn.begin_with($write_begin).await?;

                let inserts = write_plan::inserts(writes);
                if !inserts.requests.is_empty() {
                    sqlx::query(concat!(
                        "insert into access_request (id, connection, command, command_sha256, requester, \
                         justification, status, created_at, expires_at, decided_at, auto_approval, version) \
                         select c.value ->> 'id', c.value ->> 'connection', c.value ->> 'command', \
                         c.value ->> 'command_sha256', c.value ->> 'requester', c.value ->> 'justification', \
                         c.value ->> 'status', cast(c.value ->> 'created_at' as bigint), \
                         cast(c.value ->> 'expires_at' as bigint), cast(c.value ->> 'decided_at' as bigint), \
                         c.value ->> 'auto_approval', 1 \
                         from ", $json_rows, " order by c.key"
                    ))
                    .bind(json_array(&inserts.requests))
                    .bind(inserts.requests.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                if !inserts.groups.is_empty() {
                    sqlx::query(concat!(
                        "insert into access_request_approval (request_id, position, group_name, status) \
                         select c.value ->> 'id', cast(c.value ->> 'position' as bigint), c.value ->> 'group', \
                         'pending' from ", $json_rows
                    ))
                    .bind(json_array(&inserts.groups))
                    .bind(inserts.groups.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                }

                // Signatures first: a decision that came with one already seen makes no change.
                let sightings = write_plan::sightings(writes);
                let mut inserted = std::collections::HashSet::new();
                if !sightings.is_empty() {
                    // `where true`: SQLite reads `on conflict` after a bare `from` as a join's.
                    let first: Vec<String> = sqlx::query_scalar(concat!(
                        "insert into slack_signature (sha256, seen_at) \
                         select c.value ->> 'sha256', cast(c.value ->> 'at' as bigint) from ", $json_rows, " \
                         where true on conflict (sha256) do nothing returning sha256"
                    ))
                    .bind(json_array(&sightings))
                    .bind(sightings.len() as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    inserted.extend(first);
                }
                let sighted = write_plan::sighted(writes, &inserted);

                let reads = write_plan::reads(writes);
                let mut read = std::collections::HashMap::new();
                if !reads.is_empty() {
                    let sql = format!(
                        "{REQUEST_WITH_GROUPS} where r.id in (select c.value ->> 'id' from {}) \
                         order by r.id, a.position",
                        $json_rows
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(json_array(&reads))
                        .bind(reads.len() as i64)
                        .fetch_all(&mut *tx)
                        .await?;
                    for request in requests_with_groups(&rows)? {
                        read.insert(request.id.clone(), request);
                    }
                }
                let plan = write_plan::Plan::new(writes, read, sighted);

                // On Postgres the deadline is also checked against the database's clock at the
                // moment of the update, so no decision lands after it, however late it commits.
                let compare_and_sets = plan.compare_and_sets()?;
                let mut won = std::collections::HashSet::new();
                if !compare_and_sets.is_empty() {
                    let rows = sqlx::query(concat!(
                        "update access_request set version = access_request.version + 1, \
                         status = coalesce(c.value ->> 'status', access_request.status), \
                         decided_at = coalesce(cast(c.value ->> 'decided_at' as bigint), access_request.decided_at), \
                         rejected_by = coalesce(c.value ->> 'rejected_by', access_request.rejected_by), \
                         rejection_reason = coalesce(c.value ->> 'rejection_reason', access_request.rejection_reason), \
                         rejected_at = coalesce(cast(c.value ->> 'rejected_at' as bigint), access_request.rejected_at), \
                         rejected_via = coalesce(c.value ->> 'rejected_via', access_request.rejected_via), \
                         result = coalesce(c.value ->> 'result', access_request.result), \
                         lease_until = coalesce(cast(c.value ->> 'lease_until' as bigint), access_request.lease_until) \
                         from ", $json_rows, " \
                         where access_request.id = c.value ->> 'id' \
                         and access_request.version = cast(c.value ->> 'expected_version' as bigint) \
                         and access_request.status = c.value ->> 'expected_status' \
                         and (c.value ->> 'before_deadline' is null or access_request.expires_at > ",
                        $decision_time,
                        ") returning id"
                    ))
                    .bind(json_array(&compare_and_sets))
                    .bind(compare_and_sets.len() as i64)
                    .fetch_all(&mut *tx)
                    .await?;
                    for row in rows {
                        won.insert(row.try_get::<String, _>("id")?);
                    }
                }
                let settled = plan.settle(&won);

                if !settled.approvals.is_empty() {
                    let expected = settled.approvals.len() as u64;
                    let approved = sqlx::query(concat!(
                        "update access_request_approval set status = 'approved', \
                         decided_by = c.value ->> 'by', decided_at = cast(c.value ->> 'at' as bigint), \
                         via = c.value ->> 'via' from ", $json_rows, " \
                         where access_request_approval.request_id = c.value ->> 'id' \
                         and access_request_approval.group_name = c.value ->> 'group' \
                         and access_request_approval.status = 'pending'"
                    ))
                    .bind(json_array(&settled.approvals))
                    .bind(settled.approvals.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                    if approved.rows_affected() != expected {
                        return Err(StoreError::Corrupt(format!(
                            "{expected} group approvals to record, {} groups still pending",
                            approved.rows_affected()
                        )));
                    }
                }
                queue_outbox(&mut tx, &self.destinations, &settled.outbox).await?;
                append_audit_events(&mut tx, self.audit_key.as_ref(), &settled.audit).await?;
                tx.commit().await?;

                {
                    // Spawned announcements belong on the server's runtime, where the pool is.
                    let _server = self.server.enter();
                    announce_changes(&self.pool, &self.changes, settled.announced);
                }
                Ok(settled.outcomes)
            }
        }

        #[async_trait::async_trait]
        impl Committer for Writer {
            async fn commit(&mut self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
                let outcome = self.try_commit(writes).await;
                // The database refusing a statement leaves the connection usable; anything else
                // (I/O, protocol) may not have: a fresh one for the next group.
                if let Err(e) = &outcome
                    && !e.is_refusal()
                {
                    self.connection = None;
                }
                outcome
            }
        }

        /// Tells this replica's waiters about committed changes at once, and other replicas'
        /// through the backend's `announce`. Only after the commit, so no transaction holds its
        /// locks for it; a lost announcement is made up by each replica's change poll.
        fn announce_changes(pool: &sqlx::Pool<$db>, hub: &ChangeHub, changes: Vec<(String, Option<Status>)>) {
            for (id, status) in &changes {
                hub.publish(id, *status);
            }
            announce(pool, changes);
        }

        /// Queues outbox entries (request id, time, entry), in order, in one statement. Their
        /// snapshots (serialized once per change) only once this replica has seen that a
        /// destination exists; until then an entry is written without, and as fanned out already
        /// unless the statement finds a destination — which the replica then sees, from its next
        /// write on. (So a destination another replica starts misses at most one group of this
        /// replica's writes, each an entry the fan-out sends nowhere.)
        async fn queue_outbox(
            conn: &mut Conn,
            destinations: &$crate::store::sql::DestinationsSeen,
            entries: &[(&str, Millis, &OutboxEntry)],
        ) -> StoreResult<()> {
            if entries.is_empty() {
                return Ok(());
            }
            if destinations.seen() {
                let mut snapshots: Vec<String> = Vec::new();
                let mut snapshot_of = Vec::with_capacity(entries.len());
                for (i, (_, _, entry)) in entries.iter().enumerate() {
                    // The entries of one change follow each other and share its request.
                    if i == 0 || !Arc::ptr_eq(&entries[i - 1].2.request, &entry.request) {
                        snapshots.push(entry.snapshot());
                    }
                    snapshot_of.push(snapshots.len() - 1);
                }
                let rows: Vec<rows::Outbox> = entries
                    .iter()
                    .zip(&snapshot_of)
                    .map(|((request_id, at, entry), &snapshot)| rows::Outbox {
                        request_id,
                        topic: &entry.topic,
                        payload: Some(&snapshots[snapshot]),
                        at: *at,
                    })
                    .collect();
                sqlx::query(concat!(
                    "insert into outbox (request_id, topic, payload, created_at, next_attempt_at) \
                     select c.value ->> 'request_id', c.value ->> 'topic', c.value ->> 'payload', \
                     cast(c.value ->> 'at' as bigint), cast(c.value ->> 'at' as bigint) \
                     from ", $json_rows, " order by c.key"
                ))
                .bind(json_array(&rows))
                .bind(rows.len() as i64)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            let rows: Vec<rows::Outbox> = entries
                .iter()
                .map(|(request_id, at, entry)| rows::Outbox {
                    request_id,
                    topic: &entry.topic,
                    payload: None,
                    at: *at,
                })
                .collect();
            let fanned_out: Vec<Option<Millis>> = sqlx::query_scalar(concat!(
                "insert into outbox (request_id, topic, created_at, next_attempt_at, delivered_at) \
                 select c.value ->> 'request_id', c.value ->> 'topic', \
                 cast(c.value ->> 'at' as bigint), cast(c.value ->> 'at' as bigint), \
                 case when exists (select 1 from destination) then null \
                 else cast(c.value ->> 'at' as bigint) end \
                 from ", $json_rows, " order by c.key returning delivered_at"
            ))
            .bind(json_array(&rows))
            .bind(rows.len() as i64)
            .fetch_all(&mut *conn)
            .await?;
            if fanned_out.iter().any(Option::is_none) {
                destinations.see();
            }
            Ok(())
        }

        /// Appends audit events (subject id, time, entry) to the keyed hash chain, in order.
        /// Bumping the head row first locks it until commit, so appends from every writer and
        /// replica are serialized and the chain never forks; all the events of one transaction
        /// take one bump and one insert.
        async fn append_audit_events(
            conn: &mut Conn,
            key: Option<&AuditKey>,
            entries: &[(&str, Millis, &AuditEntry)],
        ) -> StoreResult<()> {
            if entries.is_empty() {
                return Ok(());
            }
            let key = key.ok_or(StoreError::NoAuditKey)?;
            let count = entries.len() as i64;
            let head = sqlx::query("update audit_head set seq = seq + $1 where id = 1 returning seq, hash")
                .bind(count)
                .fetch_one(&mut *conn)
                .await?;
            let first_seq = head.try_get::<i64, _>("seq")? - count + 1;
            let mut prev_hash: String = head.try_get("hash")?;
            let mut events = Vec::with_capacity(entries.len());
            for (i, (subject_id, at, entry)) in entries.iter().enumerate() {
                let mut event = AuditEvent {
                    seq: first_seq + i as i64,
                    request_id: subject_id.to_string(),
                    kind: entry.kind.to_string(),
                    actor: entry.actor.clone(),
                    channel: entry.channel.to_string(),
                    at: *at,
                    detail: entry.detail.clone(),
                    prev_hash: std::mem::take(&mut prev_hash),
                    hash: String::new(),
                };
                event.hash = $crate::audit::event_hash(key, &event.prev_hash, &event);
                prev_hash = event.hash.clone();
                events.push(event);
            }
            let rows: Vec<rows::Audit> = events
                .iter()
                .map(|event| rows::Audit {
                    seq: event.seq,
                    request_id: &event.request_id,
                    kind: &event.kind,
                    actor: &event.actor,
                    channel: &event.channel,
                    at: event.at,
                    detail: event.detail.to_string(),
                    prev_hash: &event.prev_hash,
                    hash: &event.hash,
                })
                .collect();
            sqlx::query(concat!(
                "insert into audit_event (seq, request_id, kind, actor, channel, at, detail, prev_hash, hash) \
                 select cast(c.value ->> 'seq' as bigint), c.value ->> 'request_id', c.value ->> 'kind', \
                 c.value ->> 'actor', c.value ->> 'channel', cast(c.value ->> 'at' as bigint), \
                 c.value ->> 'detail', c.value ->> 'prev_hash', c.value ->> 'hash' from ", $json_rows
            ))
            .bind(json_array(&rows))
                    .bind(rows.len() as i64)
            .execute(&mut *conn)
            .await?;
            sqlx::query("update audit_head set hash = $1 where id = 1")
                .bind(&prev_hash)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Requests with their approval groups, from rows of [`REQUEST_WITH_GROUPS`] ordered by
        /// request: one row per group (one row with no group for a request without any).
        fn requests_with_groups(rows: &[DbRow]) -> StoreResult<Vec<AccessRequest>> {
            let mut requests: Vec<AccessRequest> = Vec::new();
            for row in rows {
                let id: String = row.try_get("id")?;
                if requests.last().is_none_or(|last| last.id != id) {
                    requests.push(request_from_row(row)?);
                }
                if let Some(group) = row.try_get::<Option<String>, _>("group_name")?
                    && let Some(request) = requests.last_mut()
                {
                    request.approval_groups.push(group_approval(
                        group,
                        row.try_get("group_status")?,
                        row.try_get("group_decided_by")?,
                        row.try_get("group_decided_at")?,
                        row.try_get("group_via")?,
                    )?);
                }
            }
            Ok(requests)
        }

        fn group_approval(
            group: String,
            status: String,
            decided_by: Option<String>,
            decided_at: Option<Millis>,
            via: Option<String>,
        ) -> StoreResult<GroupApproval> {
            Ok(GroupApproval {
                group,
                status: match status.as_str() {
                    "pending" => GroupStatus::Pending,
                    "approved" => GroupStatus::Approved,
                    other => return Err(StoreError::Corrupt(format!("group status {other:?}"))),
                },
                decided_by,
                decided_at,
                via,
            })
        }

        fn audit_event(row: &DbRow) -> StoreResult<AuditEvent> {
            let detail: String = row.try_get("detail")?;
            Ok(AuditEvent {
                seq: row.try_get("seq")?,
                request_id: row.try_get("request_id")?,
                kind: row.try_get("kind")?,
                actor: row.try_get("actor")?,
                channel: row.try_get("channel")?,
                at: row.try_get("at")?,
                detail: serde_json::from_str(&detail)
                    .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        }

        fn token_record(row: &DbRow) -> StoreResult<TokenRecord> {
            Ok(TokenRecord {
                sha256: row.try_get("token_sha256")?,
                subject: token_subject(row)?,
                terms: token_terms(row)?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        fn token_terms(row: &DbRow) -> StoreResult<TokenTerms> {
            let claimed_groups: Option<String> = row.try_get("claimed_groups")?;
            Ok(TokenTerms {
                expires_at: row.try_get("expires_at")?,
                claimed_groups: claimed_groups
                    .map(|groups| serde_json::from_str(&groups))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("token claimed_groups: {e}")))?,
            })
        }

        fn token_subject(row: &DbRow) -> StoreResult<TokenSubject> {
            let subject: String = row.try_get("subject")?;
            match row.try_get::<String, _>("kind")?.as_str() {
                "user" => Email::parse(&subject)
                    .map(TokenSubject::User)
                    .map_err(|e| StoreError::Corrupt(e.to_string())),
                "agent" => Ok(TokenSubject::Agent(subject)),
                other => Err(StoreError::Corrupt(format!("token kind {other:?}"))),
            }
        }

        fn request_from_row(row: &DbRow) -> StoreResult<AccessRequest> {
            let status: String = row.try_get("status")?;
            let rejected_by: Option<String> = row.try_get("rejected_by")?;
            let result: Option<String> = row.try_get("result")?;
            Ok(AccessRequest {
                id: row.try_get("id")?,
                connection: row.try_get("connection")?,
                command: row.try_get("command")?,
                command_sha256: row.try_get("command_sha256")?,
                requester: row.try_get("requester")?,
                justification: row.try_get("justification")?,
                status: Status::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("request status {status:?}")))?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                decided_at: row.try_get("decided_at")?,
                version: row.try_get("version")?,
                approval_groups: Vec::new(),
                rejection: match rejected_by {
                    None => None,
                    Some(by) => Some(Rejection {
                        by,
                        reason: row.try_get::<Option<String>, _>("rejection_reason")?.unwrap_or_default(),
                        at: row.try_get::<Option<i64>, _>("rejected_at")?.unwrap_or_default(),
                        via: row.try_get::<Option<String>, _>("rejected_via")?.unwrap_or_default(),
                    }),
                },
                result: result
                    .map(|json| serde_json::from_str(&json))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?,
                claimed_by: row.try_get("agent")?,
                auto_approval: row
                    .try_get::<Option<String>, _>("auto_approval")?
                    .map(|json| serde_json::from_str(&json))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("auto_approval: {e}")))?,
                offer: row.try_get("offer")?,
            })
        }
    };
}
