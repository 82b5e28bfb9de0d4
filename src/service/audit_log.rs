//! The audit log as admins read it: a page of events by subject, actor and kind, newest first,
//! and whether the whole chain verifies.

use super::{Hoop, admin_only};
use crate::audit::AuditEvent;
use crate::domain::Identity;
use crate::error::Result;
use crate::store::{AuditFilter, ChainCheck, check_audit_chain};

impl Hoop {
    /// The events `filter` picks, newest first. Admins only.
    pub async fn audit_log(
        &self,
        actor: &Identity,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>> {
        admin_only(actor, "read the audit log")?;
        Ok(self.store.audit_log(filter).await?)
    }

    /// The whole chain checked with this server's audit key, as `hoop audit verify` checks it
    /// (without a checkpoint: those are kept away from the server); `None` without a key, which
    /// only a server that appends nothing runs without. Admins only.
    pub async fn verify_audit(&self, actor: &Identity) -> Result<Option<ChainCheck>> {
        admin_only(actor, "verify the audit log")?;
        let Some(key) = self.config.server.audit_key.as_ref() else {
            return Ok(None);
        };
        Ok(Some(
            check_audit_chain(self.store.as_ref(), key, &[]).await?,
        ))
    }
}
