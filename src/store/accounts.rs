//! Chat accounts linked to hoopbot users, and the one-time codes that link them (see
//! migrations/*/0005_chat_accounts.sql). Shared SQL for both backends, like deliveries.rs.
//!
//! Every link and unlink, and every code refused, commits with its audit event in one transaction
//! of its own (why not through the group commit: see `append_subject_events` in sql.rs).

use async_trait::async_trait;

use super::{AuditOf, StoreResult, SubjectEvent};
use crate::domain::Millis;

/// A chat account linked to a hoopbot user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedAccount {
    /// The chat: `slack` (later `teams`).
    pub kind: String,
    /// The chat's own id for the person (a Slack user id).
    pub account: String,
    /// The hoopbot user, as the config spells the email.
    pub email: String,
    pub linked_at: Millis,
    /// How the link was proven: `code` or `email`.
    pub linked_by: String,
}

/// What became of a one-time code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The code was good: the account it was issued to is now linked.
    Linked(LinkedAccount),
    Unknown,
    Expired,
    AlreadyUsed,
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// Keeps a one-time code (its SHA-256) for `account`, valid until `expires_at`.
    async fn insert_link_code(
        &self,
        code_sha256: &str,
        kind: &str,
        account: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<()>;
    /// The chat account a code was shown to (kind, account), while the code is unused and
    /// unexpired: what a confirmation page shows before anything is linked.
    async fn link_code_holder(
        &self,
        code_sha256: &str,
        now: Millis,
    ) -> StoreResult<Option<(String, String)>>;
    /// Uses up the code and links its account to `email`, with the event `audit` makes of the
    /// outcome, in one transaction: a code links once, never without its trace, and a code
    /// refused (unknown, expired, used) is refused only once its refusal is in the trail.
    async fn redeem_link_code(
        &self,
        code_sha256: &str,
        email: &str,
        now: Millis,
        audit: AuditOf<'_, Redeemed>,
    ) -> StoreResult<Redeemed>;
    /// Appends events about accounts that change nothing else (a link code refused before it
    /// was looked up), at `at`, in one transaction.
    async fn append_account_events(&self, at: Millis, audit: &[SubjectEvent]) -> StoreResult<()>;
    /// Links `link.account` to `link.email` (replacing an earlier link of the account), with
    /// `audit` (at `link.linked_at`), in one transaction.
    async fn link_account(&self, link: &LinkedAccount, audit: &[SubjectEvent]) -> StoreResult<()>;
    /// Removes the account's link, with the event `audit` makes of it, in one transaction;
    /// returns it when there was one.
    async fn unlink_account(
        &self,
        kind: &str,
        account: &str,
        now: Millis,
        audit: AuditOf<'_, LinkedAccount>,
    ) -> StoreResult<Option<LinkedAccount>>;
    async fn linked_account(&self, kind: &str, account: &str)
    -> StoreResult<Option<LinkedAccount>>;
    /// Every account of `kind` linked to one of `emails` (compared without ASCII case).
    async fn accounts_of(&self, kind: &str, emails: &[&str]) -> StoreResult<Vec<LinkedAccount>>;
}

macro_rules! account_store {
    ($store:ty, write_begin = $write_begin:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Accounts for $store {
            async fn insert_link_code(
                &self,
                code_sha256: &str,
                kind: &str,
                account: &str,
                now: $crate::domain::Millis,
                expires_at: $crate::domain::Millis,
            ) -> StoreResult<()> {
                sqlx::query(
                    "insert into link_code (code_sha256, kind, account, created_at, expires_at) \
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(code_sha256)
                .bind(kind)
                .bind(account)
                .bind(now)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn link_code_holder(
                &self,
                code_sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<Option<(String, String)>> {
                let row = sqlx::query(
                    "select kind, account from link_code \
                     where code_sha256 = $1 and used_at is null and expires_at > $2",
                )
                .bind(code_sha256)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| Ok((row.try_get("kind")?, row.try_get("account")?)))
                    .transpose()
            }

            async fn redeem_link_code(
                &self,
                code_sha256: &str,
                email: &str,
                now: $crate::domain::Millis,
                audit: $crate::store::AuditOf<'_, $crate::store::Redeemed>,
            ) -> StoreResult<$crate::store::Redeemed> {
                use $crate::store::Redeemed;
                let mut tx = self.pool.begin_with($write_begin).await?;
                let used = sqlx::query(
                    "update link_code set used_at = $2 \
                     where code_sha256 = $1 and used_at is null and expires_at > $2 \
                     returning kind, account",
                )
                .bind(code_sha256)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(used) = used else {
                    let row = sqlx::query("select used_at from link_code where code_sha256 = $1")
                        .bind(code_sha256)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let refused = match row {
                        None => Redeemed::Unknown,
                        Some(row) => match row.try_get::<Option<i64>, _>("used_at")? {
                            Some(_) => Redeemed::AlreadyUsed,
                            None => Redeemed::Expired,
                        },
                    };
                    self.append_subject_events(&mut tx, now, &[audit(&refused)])
                        .await?;
                    tx.commit().await?;
                    return Ok(refused);
                };
                let link = $crate::store::LinkedAccount {
                    kind: used.try_get("kind")?,
                    account: used.try_get("account")?,
                    email: email.to_string(),
                    linked_at: now,
                    linked_by: "code".into(),
                };
                upsert_account(&mut tx, &link).await?;
                let linked = Redeemed::Linked(link);
                self.append_subject_events(&mut tx, now, &[audit(&linked)])
                    .await?;
                tx.commit().await?;
                Ok(linked)
            }

            async fn append_account_events(
                &self,
                at: $crate::domain::Millis,
                audit: &[$crate::store::SubjectEvent],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($write_begin).await?;
                self.append_subject_events(&mut tx, at, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn link_account(
                &self,
                link: &$crate::store::LinkedAccount,
                audit: &[$crate::store::SubjectEvent],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($write_begin).await?;
                upsert_account(&mut tx, link).await?;
                self.append_subject_events(&mut tx, link.linked_at, audit)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn unlink_account(
                &self,
                kind: &str,
                account: &str,
                now: $crate::domain::Millis,
                audit: $crate::store::AuditOf<'_, $crate::store::LinkedAccount>,
            ) -> StoreResult<Option<$crate::store::LinkedAccount>> {
                let mut tx = self.pool.begin_with($write_begin).await?;
                let row = sqlx::query(
                    "delete from chat_account where kind = $1 and account = $2 \
                     returning kind, account, email, linked_at, linked_by",
                )
                .bind(kind)
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?;
                let removed = row.map(|row| linked_account(&row)).transpose()?;
                if let Some(link) = &removed {
                    self.append_subject_events(&mut tx, now, &[audit(link)])
                        .await?;
                }
                tx.commit().await?;
                Ok(removed)
            }

            async fn linked_account(
                &self,
                kind: &str,
                account: &str,
            ) -> StoreResult<Option<$crate::store::LinkedAccount>> {
                let row = sqlx::query(
                    "select kind, account, email, linked_at, linked_by from chat_account \
                     where kind = $1 and account = $2",
                )
                .bind(kind)
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| linked_account(&row)).transpose()
            }

            async fn accounts_of(
                &self,
                kind: &str,
                emails: &[&str],
            ) -> StoreResult<Vec<$crate::store::LinkedAccount>> {
                if emails.is_empty() {
                    return Ok(Vec::new());
                }
                // Emails match without ASCII case, as configured users do (the index is on
                // `lower(email)`).
                let sql = format!(
                    "select kind, account, email, linked_at, linked_by from chat_account \
                     where kind = $1 and lower(email) in ({}) order by linked_at, account",
                    placeholders(2, emails.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(kind);
                for email in emails {
                    query = query.bind(email.to_ascii_lowercase());
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.iter().map(linked_account).collect()
            }
        }

        async fn upsert_account(
            conn: &mut Conn,
            link: &$crate::store::LinkedAccount,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into chat_account (kind, account, email, linked_at, linked_by) \
                 values ($1, $2, $3, $4, $5) on conflict (kind, account) do update set \
                 email = excluded.email, linked_at = excluded.linked_at, \
                 linked_by = excluded.linked_by",
            )
            .bind(&link.kind)
            .bind(&link.account)
            .bind(&link.email)
            .bind(link.linked_at)
            .bind(&link.linked_by)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        fn linked_account(row: &DbRow) -> StoreResult<$crate::store::LinkedAccount> {
            Ok($crate::store::LinkedAccount {
                kind: row.try_get("kind")?,
                account: row.try_get("account")?,
                email: row.try_get("email")?,
                linked_at: row.try_get("linked_at")?,
                linked_by: row.try_get("linked_by")?,
            })
        }
    };
}
