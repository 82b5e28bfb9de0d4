//! The use cases of delivery: what a request's destinations were told, the webhook endpoints and
//! their attempts (for admins), and test pings.

use async_trait::async_trait;

use super::{Hoop, admin_only};
use crate::domain::{self, AccessRequest, Identity, Millis};
use crate::error::{Error, Result};
use crate::store::{AttemptRecord, DeliveryRecord};
use crate::view::{AccessRequestView, PingView, WebhookView};

/// The configured webhook endpoints, as the admins' use cases need them: where each points now,
/// and a test ping. The delivery layer implements it; the composition root hands it to [`Hoop`],
/// so the service never reaches up into delivery.
#[async_trait]
pub trait WebhookEndpoints: Send + Sync {
    /// The SHA-256 of where webhook `name` points now; `None` when it is not configured.
    fn address_sha256(&self, name: &str) -> Option<String>;
    /// Sends webhook `name` a signed `ping` event now; `None` when there is no such webhook.
    async fn ping(&self, name: &str, now: Millis) -> Option<WebhookPing>;
}

/// How a test ping went.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPing {
    /// Its `webhook-id`.
    pub id: String,
    pub delivered: bool,
    /// The receiver's status, when it answered.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

impl Hoop {
    /// `request` as the API shows it to `reader`: with what each destination was told of it, and
    /// what `reader` may do with it now.
    pub async fn view(
        &self,
        reader: &Identity,
        request: AccessRequest,
    ) -> Result<AccessRequestView> {
        Ok(self
            .views(reader, vec![request])
            .await?
            .pop()
            .expect("one view"))
    }

    /// `request` as the reply to a write (a submission, a decision) shows it: as that write left
    /// it, without `deliveries`, which every read of the request carries. Reading them would cost
    /// each write a query on the path every decision takes.
    pub fn reply(&self, request: AccessRequest) -> AccessRequestView {
        AccessRequestView::new(request, &self.config.server.public_url)
    }

    /// `requests` as the API shows them to `reader`, with their deliveries and chat messages (one
    /// query each), and what `reader` may do with each now: the one rule ([`domain::you_may`]) on
    /// the service's clock.
    pub async fn views(
        &self,
        reader: &Identity,
        requests: Vec<AccessRequest>,
    ) -> Result<Vec<AccessRequestView>> {
        let now = self.now().await?;
        let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
        let mut deliveries = self.store.deliveries_of(&ids).await?;
        let mut messages = self.store.posted_for(&ids).await?;
        Ok(requests
            .into_iter()
            .map(|request| {
                let (mine, rest) = deliveries
                    .drain(..)
                    .partition(|d| d.request_id == request.id);
                deliveries = rest;
                let (posted, rest) = messages.drain(..).partition(|m| m.request_id == request.id);
                messages = rest;
                let you_may = domain::you_may(&request, reader, now);
                AccessRequestView::new(request, &self.config.server.public_url)
                    .with_deliveries(mine, posted)
                    .with_you_may(you_may)
            })
            .collect())
    }

    /// The configured webhooks and how their deliveries stand. Admins only.
    pub async fn webhooks(&self, actor: &Identity) -> Result<Vec<WebhookView>> {
        admin_only(actor, "list webhooks")?;
        let mut views = Vec::new();
        for hook in &self.config.webhooks {
            let address = self.webhooks.address_sha256(&hook.name).unwrap_or_default();
            let stats = self
                .store
                .destination_stats("webhook", &hook.name, &address)
                .await?;
            views.push(WebhookView {
                name: hook.name.clone(),
                url: shown_url(&hook.url),
                events: hook.events.iter().map(|e| e.as_str().to_string()).collect(),
                include_command: hook.include_command,
                allow_private: hook.allow_private,
                give_up_after: humantime::format_duration(hook.give_up_after).to_string(),
                state: if stats.disabled.is_some() {
                    "disabled"
                } else {
                    "enabled"
                }
                .into(),
                disabled_at: stats
                    .disabled
                    .as_ref()
                    .map(|(at, _)| crate::domain::rfc3339(*at)),
                disabled_reason: stats.disabled.map(|(_, reason)| reason),
                pending: stats.pending,
                delivered: stats.delivered,
                given_up: stats.given_up,
                dropped: stats.dropped,
            });
        }
        Ok(views)
    }

    /// Webhook `name`'s deliveries, newest first, below delivery `before`. Admins only.
    pub async fn webhook_deliveries(
        &self,
        actor: &Identity,
        name: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        admin_only(actor, "read webhook deliveries")?;
        self.known_webhook(name)?;
        Ok(self
            .store
            .deliveries_to("webhook", name, before, limit)
            .await?)
    }

    /// Webhook `name`'s attempts, newest first, below attempt `before`. Admins only.
    pub async fn webhook_attempts(
        &self,
        actor: &Identity,
        name: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AttemptRecord>> {
        admin_only(actor, "read webhook deliveries")?;
        self.known_webhook(name)?;
        Ok(self.store.attempts("webhook", name, before, limit).await?)
    }

    /// Sends webhook `name` a signed `ping` now and records the attempt. Admins only.
    pub async fn ping_webhook(&self, actor: &Identity, name: &str) -> Result<PingView> {
        admin_only(actor, "test webhooks")?;
        self.known_webhook(name)?;
        let now = self.now().await?;
        let ping = self
            .webhooks
            .ping(name, now)
            .await
            .ok_or_else(|| Error::NotFound(format!("webhook {name:?} not found")))?;
        let attempted = crate::store::Attempted {
            at: now,
            status: ping.status,
            latency_ms: ping.latency_ms,
            error: ping.error.clone(),
        };
        self.store
            .record_attempt("webhook", name, "ping", &attempted)
            .await?;
        tracing::info!(webhook = name, status = ?ping.status, error = ?ping.error, "test ping sent");
        Ok(PingView {
            webhook: name.to_string(),
            webhook_id: ping.id,
            delivered: ping.delivered,
            status: ping.status,
            latency_ms: ping.latency_ms,
            error: ping.error,
        })
    }

    fn known_webhook(&self, name: &str) -> Result<()> {
        if self.config.webhook(name).is_some() {
            return Ok(());
        }
        let known: Vec<&str> = self
            .config
            .webhooks
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        Err(Error::NotFound(format!(
            "webhook {name:?} not found; configured: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }
}

/// A webhook URL as shown to admins: scheme, host, port and path; a query string or user info
/// may carry a token.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}
