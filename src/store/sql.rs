//! The SQL both backends share. It is written once, as a macro instantiated for each backend's
//! concrete sqlx types: sqlx's generic database traits cannot express "a transaction of any backend"
//! without bounds that would drown the queries, and `sqlx::Any` cannot carry our types. Every query
//! uses `$n` placeholders, which SQLite and Postgres both accept.
//!
//! Dynamic SQL (wrapped in `AssertSqlSafe`) only ever splices in constants and `$n` placeholders;
//! values are always bound.
//!
//! Each backend provides `run_migrations`, `announce` (called after every commit, so other
//! replicas hear of the change) and `clock` (the time deadlines are measured by), and says how a decision's deadline is checked (`decision_time`, in terms of the
//! decision's own time `$12`).

pub(super) const REQUEST_COLUMNS: &str = "id, connection, command, command_sha256, requester, \
    justification, status, created_at, expires_at, decided_at, version, rejected_by, \
    rejection_reason, rejected_at, rejected_via, result, agent, offer";

/// `$first, $first+1, …` for `count` values, for `in (…)` lists.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! sql_store {
    (
        $store:ty,
        $db:ty,
        claim_lock = $claim_lock:expr,
        decision_time = $decision_time:literal,
        sweep_begin = $sweep_begin:expr
    ) => {
        type DbRow = <$db as sqlx::Database>::Row;
        type Tx<'c> = sqlx::Transaction<'c, $db>;

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.run_migrations().await
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("select 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn now(&self, clock: &$crate::service::Clock) -> StoreResult<Millis> {
                self.clock(clock).await
            }

            #[tracing::instrument(skip_all, fields(request_id = %new.id), err)]
            async fn insert_request(
                &self,
                new: &NewRequest,
                audit: &[AuditEntry],
                outbox: &[OutboxEntry],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "insert into access_request (id, connection, command, command_sha256, requester, \
                     justification, status, created_at, expires_at, decided_at, version) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)",
                )
                .bind(&new.id)
                .bind(&new.connection)
                .bind(&new.command)
                .bind(&new.command_sha256)
                .bind(&new.requester)
                .bind(&new.justification)
                .bind(new.status.as_str())
                .bind(new.created_at)
                .bind(new.expires_at)
                .bind(new.decided_at)
                .execute(&mut *tx)
                .await?;
                for (position, group) in new.approval_groups.iter().enumerate() {
                    sqlx::query(
                        "insert into access_request_approval (request_id, position, group_name, status) \
                         values ($1, $2, $3, 'pending')",
                    )
                    .bind(&new.id)
                    .bind(position as i64)
                    .bind(group)
                    .execute(&mut *tx)
                    .await?;
                }
                self.record(&mut tx, &new.id, new.created_at, audit, outbox).await?;
                tx.commit().await?;
                self.changed(&[(new.id.as_str(), Some(new.status))]).await;
                Ok(())
            }

            async fn get_request(&self, id: &str) -> StoreResult<Option<AccessRequest>> {
                let sql = format!("select {REQUEST_COLUMNS} from access_request where id = $1");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?;
                Ok(self.with_approvals(rows).await?.pop())
            }

            async fn list_requests(&self, filter: &ListFilter) -> StoreResult<Vec<AccessRequest>> {
                // Absent filters bind NULL and match everything, keeping one static statement.
                let sql = format!(
                    "select {REQUEST_COLUMNS} from access_request \
                     where ($1 is null or status = $1) and ($2 is null or connection = $2) \
                     and ($3 is null or requester = $3) and ($4 is null or id < $4) \
                     order by id desc limit $5"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(filter.status.map(|s| s.as_str()))
                    .bind(&filter.connection)
                    .bind(&filter.requester)
                    .bind(&filter.before_id)
                    .bind(filter.limit)
                    .fetch_all(&self.pool)
                    .await?;
                self.with_approvals(rows).await
            }

            #[tracing::instrument(skip_all, fields(request_id = %change.request_id), err(level = "debug"))]
            async fn apply(&self, change: &Change) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                let rejection = change.rejection.as_ref();
                let result = change
                    .result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                // The compare-and-set: only the writer that read this exact version wins.
                // On Postgres the deadline is also checked against the database's clock at the
                // moment of the update, so no decision lands after it, however late it commits.
                let updated = sqlx::query(concat!(
                    "update access_request set version = version + 1, \
                     status = coalesce($3, status), decided_at = coalesce($4, decided_at), \
                     rejected_by = coalesce($5, rejected_by), \
                     rejection_reason = coalesce($6, rejection_reason), \
                     rejected_at = coalesce($7, rejected_at), rejected_via = coalesce($8, rejected_via), \
                     result = coalesce($9, result), lease_until = coalesce($10, lease_until) \
                     where id = $1 and version = $2 and status = $11 \
                     and ($12 is null or expires_at > ",
                    $decision_time,
                    ")"
                ))
                .bind(&change.request_id)
                .bind(change.expected_version)
                .bind(change.status.map(|s| s.as_str()))
                .bind(change.decided_at)
                .bind(rejection.map(|r| r.by.as_str()))
                .bind(rejection.map(|r| r.reason.as_str()))
                .bind(rejection.map(|r| r.at))
                .bind(rejection.map(|r| r.via.as_str()))
                .bind(result)
                .bind(change.lease_until)
                .bind(change.expected_status.as_str())
                .bind(change.before_deadline)
                .execute(&mut *tx)
                .await?;
                if updated.rows_affected() != 1 {
                    return Err(StoreError::Conflict);
                }
                if let Some(decision) = &change.group_approval {
                    let approved = sqlx::query(
                        "update access_request_approval set status = 'approved', decided_by = $3, \
                         decided_at = $4, via = $5 \
                         where request_id = $1 and group_name = $2 and status = 'pending'",
                    )
                    .bind(&change.request_id)
                    .bind(&decision.group)
                    .bind(&decision.by)
                    .bind(change.at)
                    .bind(&decision.via)
                    .execute(&mut *tx)
                    .await?;
                    if approved.rows_affected() != 1 {
                        return Err(StoreError::Conflict);
                    }
                }
                self.record(&mut tx, &change.request_id, change.at, &change.audit, &change.outbox).await?;
                tx.commit().await?;
                self.changed(&[(change.request_id.as_str(), change.status)]).await;
                Ok(())
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
                let select = format!(
                    "select {REQUEST_COLUMNS} from access_request where {filter} \
                     order by {order}, id limit $1{}",
                    $claim_lock
                );
                let mut tx = self.pool.begin_with($sweep_begin).await?;
                let mut query = sqlx::query(sqlx::AssertSqlSafe(select)).bind(limit);
                for (connection, time) in &times {
                    if let Some(connection) = connection {
                        query = query.bind(*connection);
                    }
                    query = query.bind(*time);
                }
                let rows = query.fetch_all(&mut *tx).await?;
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
                let mut moved = Vec::new();
                for row in &rows {
                    let request = request_from_row(row)?;
                    let change = step(&request);
                    let result = change
                        .result
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
                    moved.push((request.id, change.status));
                }
                tx.commit().await?;
                let moved: Vec<(&str, Option<Status>)> =
                    moved.iter().map(|(id, status)| (id.as_str(), *status)).collect();
                self.changed(&moved).await;
                Ok(moved.len())
            }

            #[tracing::instrument(skip_all, fields(agent = %claim.agent), err)]
            async fn claim_next(&self, claim: &Claim) -> StoreResult<Option<AccessRequest>> {
                if claim.connections.is_empty() {
                    return Ok(None);
                }
                // Each connection with its pickup cutoff: `(connection = $n and decided_at > $n+1)`.
                let windows = (0..claim.connections.len())
                    .map(|i| format!("(connection = ${} and decided_at > ${})", 2 * i + 5, 2 * i + 6))
                    .collect::<Vec<_>>()
                    .join(" or ");
                // The token is re-checked in the claiming statement itself, so a token revoked
                // while its long poll waited never receives a job.
                let sql = format!(
                    "update access_request set version = version + 1, \
                     agent = $1, lease_until = $2, offer = $3 \
                     where id = (select id from access_request where status = 'approved' \
                                 and agent is null and ({windows}) \
                                 order by decided_at, id limit 1{}) \
                     and status = 'approved' and agent is null \
                     and ($4 is null or exists (select 1 from api_token where token_sha256 = $4 \
                          and kind = 'agent' and subject = $1 and revoked_at is null)) \
                     returning id",
                    $claim_lock,
                );
                let mut tx = self.pool.begin().await?;
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&claim.agent)
                    .bind(claim.offer_until)
                    .bind(&claim.offer)
                    .bind(&claim.token_sha256);
                for (connection, cutoff) in &claim.connections {
                    query = query.bind(connection).bind(*cutoff);
                }
                let Some(row) = query.fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let id: String = row.try_get("id")?;
                let claimed = AuditEntry {
                    kind: "claimed",
                    actor: claim.agent.clone(),
                    channel: "agent".into(),
                    detail: serde_json::json!({ "offer_until": $crate::http::view::time(claim.offer_until) }),
                };
                self.record(&mut tx, &id, claim.now, &[claimed], &[]).await?;
                tx.commit().await?;
                self.changed(&[(id.as_str(), None)]).await;
                self.get_request(&id).await
            }

            async fn audit_events(&self, request_id: Option<&str>) -> StoreResult<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "select seq, request_id, kind, actor, channel, at, detail, prev_hash, hash \
                     from audit_event where ($1 is null or request_id = $1) order by seq",
                )
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
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

            async fn append_audit(
                &self,
                subject_id: &str,
                at: Millis,
                audit: &[AuditEntry],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                self.record(&mut tx, subject_id, at, audit, &[]).await?;
                tx.commit().await?;
                Ok(())
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
                        let payload: String = row.try_get("payload")?;
                        Ok(OutboxRow {
                            id: row.try_get("id")?,
                            request_id: row.try_get("request_id")?,
                            topic: row.try_get("topic")?,
                            payload: serde_json::from_str(&payload)
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
                now: Millis,
            ) -> StoreResult<()> {
                let (kind, name) = match subject {
                    TokenSubject::User(email) => ("user", email),
                    TokenSubject::Agent(name) => ("agent", name),
                };
                sqlx::query(
                    "insert into api_token (token_sha256, subject, kind, created_at) values ($1, $2, $3, $4)",
                )
                .bind(sha256)
                .bind(name)
                .bind(kind)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn find_token(&self, sha256: &str) -> StoreResult<Option<TokenSubject>> {
                let row = sqlx::query(
                    "select subject, kind from api_token where token_sha256 = $1 and revoked_at is null",
                )
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| token_subject(&row)).transpose()
            }

            async fn revoke_tokens(&self, which: &TokenSelector, now: Millis) -> StoreResult<Vec<TokenRecord>> {
                let (digest, kind, subject) = match which {
                    TokenSelector::Digest(digest) => (Some(digest.as_str()), None, None),
                    TokenSelector::Subject(TokenSubject::User(email)) => (None, Some("user"), Some(email.as_str())),
                    TokenSelector::Subject(TokenSubject::Agent(name)) => (None, Some("agent"), Some(name.as_str())),
                };
                let rows = sqlx::query(
                    "update api_token set revoked_at = $1 where revoked_at is null \
                     and ($2 is null or token_sha256 = $2) and ($3 is null or kind = $3) \
                     and ($4 is null or subject = $4) \
                     returning token_sha256, subject, kind, created_at, revoked_at",
                )
                .bind(now)
                .bind(digest)
                .bind(kind)
                .bind(subject)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_record).collect()
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
                let rows = sqlx::query(
                    "select token_sha256, subject, kind, created_at, revoked_at from api_token \
                     order by created_at, subject",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_record).collect()
            }
        }

        impl $store {
            /// Tells waiters about committed changes: this replica's at once, other replicas'
            /// through [`Self::announce`]. Only after the commit, so no transaction holds its locks
            /// for it; a lost announcement is made up by each replica's change poll.
            async fn changed(&self, changes: &[(&str, Option<Status>)]) {
                // Most sweeps move nothing: no round trip for them.
                if changes.is_empty() {
                    return;
                }
                for (id, status) in changes {
                    self.changes.publish(id, *status);
                }
                if let Err(e) = self.announce(changes).await {
                    tracing::warn!(error = %e, "cannot announce changes to other replicas; their poll will find them");
                }
            }
            /// Queues outbox entries and appends audit events to the hash chain, inside `tx`. The
            /// chain comes last: appending locks its head row until commit, so the less that
            /// follows it, the less other writers wait.
            async fn record(
                &self,
                tx: &mut Tx<'_>,
                request_id: &str,
                at: Millis,
                audit: &[AuditEntry],
                outbox: &[OutboxEntry],
            ) -> StoreResult<()> {
                for entry in outbox {
                    sqlx::query(
                        "insert into outbox (request_id, topic, payload, created_at, next_attempt_at) \
                         values ($1, $2, $3, $4, $4)",
                    )
                    .bind(request_id)
                    .bind(&entry.topic)
                    .bind(entry.payload.to_string())
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                }
                if audit.is_empty() {
                    return Ok(());
                }
                let key = self.audit_key.as_ref().ok_or(StoreError::NoAuditKey)?;
                for entry in audit {
                    // Bumping the head row first locks it: appends are serialized across replicas,
                    // so the chain never forks.
                    let head = sqlx::query(
                        "update audit_head set seq = seq + 1 where id = 1 returning seq, hash",
                    )
                    .fetch_one(&mut **tx)
                    .await?;
                    let prev_hash: String = head.try_get("hash")?;
                    let mut event = AuditEvent {
                        seq: head.try_get("seq")?,
                        request_id: request_id.to_string(),
                        kind: entry.kind.to_string(),
                        actor: entry.actor.clone(),
                        channel: entry.channel.clone(),
                        at,
                        detail: entry.detail.clone(),
                        prev_hash,
                        hash: String::new(),
                    };
                    event.hash = $crate::audit::event_hash(key, &event.prev_hash, &event);
                    sqlx::query(
                        "insert into audit_event (seq, request_id, kind, actor, channel, at, detail, \
                         prev_hash, hash) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(event.seq)
                    .bind(&event.request_id)
                    .bind(&event.kind)
                    .bind(&event.actor)
                    .bind(&event.channel)
                    .bind(event.at)
                    .bind(event.detail.to_string())
                    .bind(&event.prev_hash)
                    .bind(&event.hash)
                    .execute(&mut **tx)
                    .await?;
                    sqlx::query("update audit_head set hash = $1 where id = 1")
                        .bind(&event.hash)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Turns request rows into requests, loading their approval groups in one query.
            async fn with_approvals(&self, rows: Vec<DbRow>) -> StoreResult<Vec<AccessRequest>> {
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
                for row in query.fetch_all(&self.pool).await? {
                    let request_id: String = row.try_get("request_id")?;
                    let status: String = row.try_get("status")?;
                    let approval = GroupApproval {
                        group: row.try_get("group_name")?,
                        status: match status.as_str() {
                            "pending" => GroupStatus::Pending,
                            "approved" => GroupStatus::Approved,
                            other => return Err(StoreError::Corrupt(format!("group status {other:?}"))),
                        },
                        decided_by: row.try_get("decided_by")?,
                        decided_at: row.try_get("decided_at")?,
                        via: row.try_get("via")?,
                    };
                    if let Some(request) = requests.iter_mut().find(|r| r.id == request_id) {
                        request.approval_groups.push(approval);
                    }
                }
                Ok(requests)
            }
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
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        fn token_subject(row: &DbRow) -> StoreResult<TokenSubject> {
            let subject: String = row.try_get("subject")?;
            match row.try_get::<String, _>("kind")?.as_str() {
                "user" => Ok(TokenSubject::User(subject)),
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
                offer: row.try_get("offer")?,
            })
        }
    };
}
