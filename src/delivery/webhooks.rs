//! Webhooks as a kind of destination: each `[[webhooks]]` endpoint receives the events it
//! subscribes to as a POST, signed per Standard Webhooks. The body is
//! `{"type", "timestamp", "data"}`, `data` being the request as the API returns it, as it was right
//! after the change (so its `version` is the event's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Answer, Notifier, Stopping, Verdict};
use crate::config::{Config, WebhookConfig};
use crate::domain::{Event, Millis};
use crate::service::{WebhookEndpoints, WebhookPing};
use crate::store::{Delivery, Route};
use crate::view::AccessRequestView;
use crate::webhook::address::{GuardedResolver, check_url};
use crate::webhook::signature;

/// What the receiver's answer is quoted with in the attempt's error, at most.
const QUOTED_BODY_BYTES: usize = 200;

/// Every configured webhook endpoint.
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
    public_url: String,
}

struct Endpoint {
    config: WebhookConfig,
    client: reqwest::Client,
    address_sha256: String,
}

impl Webhooks {
    pub fn new(config: &Config) -> anyhow::Result<Webhooks> {
        let endpoints = config
            .webhooks
            .iter()
            .map(|hook| {
                let client = reqwest::Client::builder()
                    // Where the host resolves is checked on each connection, so a name that
                    // resolves elsewhere later (DNS rebinding) cannot reach a private address.
                    .dns_resolver(Arc::new(GuardedResolver {
                        allow_private: hook.allow_private,
                    }))
                    // A redirect could lead anywhere, past the address check.
                    .redirect(reqwest::redirect::Policy::none())
                    // Through a proxy, the proxy would resolve the host, past the resolver.
                    .no_proxy()
                    .timeout(hook.timeout)
                    .user_agent(concat!(
                        "hoopbot/",
                        env!("CARGO_PKG_VERSION"),
                        " (webhooks)"
                    ))
                    .build()?;
                Ok(Endpoint {
                    address_sha256: hex::encode(Sha256::digest(hook.url.as_str())),
                    config: hook.clone(),
                    client,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Webhooks {
            endpoints,
            public_url: config.server.public_url.clone(),
        })
    }

    fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.config.name == name)
    }

    /// The body delivered for `delivery` to `endpoint`; the error says why it can never be made.
    fn body(&self, endpoint: &Endpoint, delivery: &Delivery) -> Result<Vec<u8>, String> {
        let request = delivery.request()?;
        let command_bytes = request.command.len();
        let mut data = serde_json::to_value(AccessRequestView::new(request, &self.public_url))
            .map_err(|e| e.to_string())?;
        if !endpoint.config.include_command
            && let Some(fields) = data.as_object_mut()
        {
            fields.remove("command");
            fields.insert("command_bytes".into(), command_bytes.into());
        }
        let body = serde_json::json!({
            "type": delivery.event,
            "timestamp": crate::domain::rfc3339(delivery.event_at),
            "data": data,
        });
        Ok(body.to_string().into_bytes())
    }
}

/// The `webhook-id` of an event: the same on every attempt and to every endpoint, so a receiver
/// can drop repeats. A request's change of one version announces each event type once.
pub fn message_id(delivery: &Delivery) -> String {
    let what = delivery
        .event
        .strip_prefix("access_request.")
        .unwrap_or(&delivery.event);
    format!("msg_{}_{}_{what}", delivery.request_id, delivery.version)
}

#[async_trait]
impl Notifier for Webhooks {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn destinations(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.config.name.clone())
            .collect()
    }

    fn routes(&self, event: Event) -> Vec<Route> {
        self.endpoints
            .iter()
            .filter(|e| e.config.events.contains(&event))
            .map(|e| Route {
                kind: "webhook",
                destination: e.config.name.clone(),
                address_sha256: e.address_sha256.clone(),
                give_up_after: i64::try_from(e.config.give_up_after.as_millis())
                    .unwrap_or(i64::MAX / 4),
            })
            .collect()
    }

    fn address_sha256(&self, destination: &str) -> Option<String> {
        self.endpoint(destination).map(|e| e.address_sha256.clone())
    }

    fn longest_attempt(&self) -> Duration {
        self.endpoints
            .iter()
            .map(|e| e.config.timeout)
            .max()
            .unwrap_or_default()
    }

    /// One call per attempt, so stopping changes nothing: a started call is finished.
    async fn deliver(&self, delivery: &Delivery, _stopping: &Stopping) -> Answer {
        let Some(endpoint) = self.endpoint(&delivery.destination) else {
            return Answer {
                status: None,
                error: Some(format!(
                    "webhook {} is not configured",
                    delivery.destination
                )),
                verdict: Verdict::Retry { after: None },
            };
        };
        match self.body(endpoint, delivery) {
            Ok(body) => endpoint.send(&message_id(delivery), body).await,
            // Retrying would read the same snapshot again.
            Err(error) => Answer {
                status: None,
                error: Some(error),
                verdict: Verdict::GiveUp,
            },
        }
    }
}

/// The admins' use cases list the endpoints and test them through this port.
#[async_trait]
impl WebhookEndpoints for Webhooks {
    fn address_sha256(&self, name: &str) -> Option<String> {
        Notifier::address_sha256(self, name)
    }

    async fn ping(&self, name: &str, now: Millis) -> Option<WebhookPing> {
        let endpoint = self.endpoint(name)?;
        let id = format!("msg_ping_{}", uuid::Uuid::now_v7().simple());
        let body = serde_json::json!({
            "type": "ping",
            "timestamp": crate::domain::rfc3339(now),
            "data": { "webhook": name },
        });
        let started = Instant::now();
        let answer = endpoint.send(&id, body.to_string().into_bytes()).await;
        Some(WebhookPing {
            id,
            delivered: answer.verdict == Verdict::Delivered,
            status: answer.status,
            error: answer.error,
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        })
    }
}

impl Endpoint {
    /// POSTs `body`, signed now, and says what the receiver made of it: 2xx delivered, 410
    /// switches the endpoint off, anything else (a status, a timeout, a refused address) is
    /// retried.
    async fn send(&self, id: &str, body: Vec<u8>) -> Answer {
        let retry = |error: String| Answer {
            status: None,
            error: Some(error),
            verdict: Verdict::Retry { after: None },
        };
        if let Err(refused) = check_url(&self.config.url, self.config.allow_private) {
            return retry(refused.to_string());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = self
            .client
            .post(self.config.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signature::headers(&self.config.secret, id, timestamp, &body) {
            request = request.header(name, value);
        }
        let response = match request.body(body).send().await {
            Ok(response) => response,
            // Without the URL: its query string may hold a token, and the error is shown to
            // everyone who can read the request.
            Err(e) => return retry(describe(&e.without_url())),
        };
        let status = response.status();
        let code = Some(i64::from(status.as_u16()));
        if status.is_success() {
            return Answer {
                status: code,
                error: None,
                verdict: Verdict::Delivered,
            };
        }
        let after = retry_after(response.headers());
        let quoted = quote(response).await;
        let error = Some(format!("HTTP {status}{quoted}"));
        let verdict = if status == reqwest::StatusCode::GONE {
            Verdict::Disable
        } else {
            Verdict::Retry { after }
        };
        Answer {
            status: code,
            error,
            verdict,
        }
    }
}

/// The start of a receiver's error body, on one line, to quote in the attempt's error.
async fn quote(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < QUOTED_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(QUOTED_BODY_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    let text = crate::display::single_line(text.trim());
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// A `Retry-After` of seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(wait.max(0) as u64))
}

/// A client error with its causes: reqwest's own message alone ("error sending request") does
/// not say whether the address was refused, the connection dropped or the receiver timed out.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = chrono::Utc::now() + chrono::Duration::seconds(120);
        headers.insert(
            reqwest::header::RETRY_AFTER,
            later.to_rfc2822().parse().unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
