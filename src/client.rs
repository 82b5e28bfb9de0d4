//! A typed client for hoopbot's HTTP API, used by the CLI and by remote agents.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::domain::{ConnectionName, ExecutionResult};
use crate::view::{AccessRequestView, AttemptPage, Page, PingView, WebhookView};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke. `reason` is the one cause that
    /// matters (connection refused, no TLS, a timeout), said once.
    #[error("cannot reach the server at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Worth retrying: the server was unreachable or temporarily failing.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => status.is_server_error(),
            ClientError::Protocol(_) => false,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// Checks a server address as people give it (`HOOP_URL`, `hoop login --url`, an agent's
/// `server_url`) and says how to fix a wrong one: it needs its scheme, and is the server's own
/// address, without the API's `/api/v1` (the client adds that).
pub fn check_server_url(url: &str) -> Result<(), String> {
    let fixed = match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
            let path = parsed.path().trim_end_matches('/');
            let Some(base) = path.strip_suffix("/api/v1") else {
                return Ok(());
            };
            let mut fixed = parsed.clone();
            fixed.set_path(base);
            let fixed = fixed.to_string();
            return Err(format!(
                "{url} is the API's address; give the server's own address instead: {}",
                fixed.trim_end_matches('/')
            ));
        }
        // `host:8009` parses as a URL of scheme "host".
        _ => format!("http://{}", url.trim_start_matches('/')),
    };
    Err(format!(
        "{url} is not a server address: it needs http:// or https://, e.g. {fixed}"
    ))
}

/// What went wrong in a failed call, said once: reqwest's own message repeats the URL at every
/// level of its chain of causes, while the last cause (refused, reset, TLS) is what matters.
fn transport_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".into();
    }
    if error.is_builder() {
        return "not a valid server address (it needs http:// or https://)".into();
    }
    let mut causes = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(c) = cause {
        causes.push(c);
        cause = c.source();
    }
    let io = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>());
    let text = causes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(io) = io {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                return "connection refused (is `hoop serve` running at that address?)".into();
            }
            std::io::ErrorKind::TimedOut => return "no answer in time".into(),
            _ => {}
        }
    }
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        return "no TLS there: is the server http:// rather than https://?".into();
    }
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return "unknown host name".into();
    }
    let last = causes.last().map(|c| c.to_string()).unwrap_or_default();
    if error.is_connect() {
        format!("cannot connect ({last})")
    } else {
        format!("the connection failed ({last})")
    }
}

/// A job as an agent receives it, with how long its lease holds without a heartbeat.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JobReply {
    pub job: Option<AccessRequestView>,
    #[serde(default)]
    pub lease_s: Option<u64>,
    /// The offer to start a claimed job with.
    #[serde(default)]
    pub offer: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds (TLS provider installed at start-up)");
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> ClientResult<T> {
        self.call_with_query(method, path, &[], body, timeout).await
    }

    async fn call_with_query<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> ClientResult<T> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .query(query)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source: reqwest::Error| ClientError::Transport {
            url: self.base.clone(),
            reason: transport_reason(&source),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let code = error["error"]["code"].as_str().unwrap_or("http_error");
        let message = match error["error"]["message"].as_str() {
            // The server has no such route: the address is most likely not the server's own
            // (a path such as /api/v1 or a proxy prefix appended).
            Some("no such endpoint") => format!(
                "{} has no such endpoint ({path}): is it the hoopbot server's own address?",
                self.base
            ),
            Some(message) => message.to_string(),
            None => format!("the server answered {status}"),
        };
        Err(ClientError::Api {
            status,
            code: code.to_string(),
            message,
        })
    }

    const SHORT: Duration = Duration::from_secs(30);
    /// For a result of up to the output cap, many megabytes over a slow link.
    const UPLOAD: Duration = Duration::from_secs(300);

    /// Who the token belongs to: `{"email", "groups", "is_admin"}`.
    pub async fn me(&self) -> ClientResult<Value> {
        self.call(Method::GET, "/me", None::<&()>, Self::SHORT)
            .await
    }

    /// Redeems the code a signed-in browser handed `hoop login`, with the secret it asked with:
    /// a token of its own. Needs no token itself.
    pub async fn cli_token(&self, code: &str, verifier: &str) -> ClientResult<Value> {
        let body = json!({ "code": code, "verifier": verifier });
        self.call(Method::POST, "/login/token", Some(&body), Self::SHORT)
            .await
    }

    /// Confirms a chat link code (`/hoop subscribe`) as the token's user.
    pub async fn confirm_link(&self, code: &str) -> ClientResult<Value> {
        let body = json!({ "code": code });
        self.call(Method::POST, "/chat-links", Some(&body), Self::SHORT)
            .await
    }

    pub async fn submit(
        &self,
        connection: &str,
        command: &str,
        justification: Option<&str>,
    ) -> ClientResult<AccessRequestView> {
        let body =
            json!({ "connection": connection, "command": command, "justification": justification });
        self.call(Method::POST, "/exec", Some(&body), Self::SHORT)
            .await
    }

    pub async fn get(&self, id: &str) -> ClientResult<AccessRequestView> {
        self.call(
            Method::GET,
            &format!("/access-requests/{id}"),
            None::<&()>,
            Self::SHORT,
        )
        .await
    }

    /// Long-polls until the request is newer than `version` (or `wait` passes).
    pub async fn wait(
        &self,
        id: &str,
        version: i64,
        wait: Duration,
    ) -> ClientResult<AccessRequestView> {
        let query = [
            ("version", version.to_string()),
            ("timeout_s", wait.as_secs().to_string()),
        ];
        let path = format!("/access-requests/{id}/wait");
        self.call_with_query(Method::GET, &path, &query, None::<&()>, wait + Self::SHORT)
            .await
    }

    /// Lists requests; `query` holds the API's filter parameters.
    pub async fn list(&self, query: &[(&str, String)]) -> ClientResult<Page> {
        self.call_with_query(
            Method::GET,
            "/access-requests",
            query,
            None::<&()>,
            Self::SHORT,
        )
        .await
    }

    pub async fn approve(&self, id: &str, group: Option<&str>) -> ClientResult<AccessRequestView> {
        let body = json!({ "group": group });
        self.call(
            Method::POST,
            &format!("/access-requests/{id}/approve"),
            Some(&body),
            Self::SHORT,
        )
        .await
    }

    pub async fn reject(&self, id: &str, reason: &str) -> ClientResult<AccessRequestView> {
        let body = json!({ "reason": reason });
        self.call(
            Method::POST,
            &format!("/access-requests/{id}/reject"),
            Some(&body),
            Self::SHORT,
        )
        .await
    }

    pub async fn cancel(&self, id: &str) -> ClientResult<AccessRequestView> {
        self.call(
            Method::POST,
            &format!("/access-requests/{id}/cancel"),
            None::<&()>,
            Self::SHORT,
        )
        .await
    }

    // ---- webhooks (admins) ----

    /// The configured webhooks and how their deliveries stand.
    pub async fn webhooks(&self) -> ClientResult<Vec<WebhookView>> {
        let page: Value = self
            .call(Method::GET, "/webhooks", None::<&()>, Self::SHORT)
            .await?;
        serde_json::from_value(page["items"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Webhook `name`'s attempts, newest first.
    pub async fn webhook_deliveries(
        &self,
        name: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> ClientResult<AttemptPage> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_string()));
        }
        let path = format!("/webhooks/{}/deliveries", crate::view::segment(name));
        self.call_with_query(Method::GET, &path, &query, None::<&()>, Self::SHORT)
            .await
    }

    /// Has the server send webhook `name` a signed ping now.
    pub async fn test_webhook(&self, name: &str) -> ClientResult<PingView> {
        let path = format!("/webhooks/{}/test", crate::view::segment(name));
        self.call(Method::POST, &path, None::<&()>, Self::SHORT)
            .await
    }

    // ---- the agent protocol ----

    pub async fn claim(
        &self,
        connections: &[ConnectionName],
        wait: Duration,
    ) -> ClientResult<JobReply> {
        let body = json!({ "connections": connections, "timeout_s": wait.as_secs() });
        self.call(
            Method::POST,
            "/agent/jobs/claim",
            Some(&body),
            wait + Self::SHORT,
        )
        .await
    }

    /// Starts a claimed job with the offer it came with; only then may the agent run it.
    pub async fn start(&self, id: &str, offer: &str) -> ClientResult<JobReply> {
        let body = json!({ "offer": offer });
        self.call(
            Method::POST,
            &format!("/agent/jobs/{id}/start"),
            Some(&body),
            Self::SHORT,
        )
        .await
    }

    pub async fn heartbeat(&self, id: &str) -> ClientResult<JobReply> {
        self.call(
            Method::POST,
            &format!("/agent/jobs/{id}/heartbeat"),
            None::<&()>,
            Self::SHORT,
        )
        .await
    }

    pub async fn report(&self, id: &str, result: &ExecutionResult) -> ClientResult<JobReply> {
        self.call(
            Method::POST,
            &format!("/agent/jobs/{id}/result"),
            Some(result),
            Self::UPLOAD,
        )
        .await
    }

    pub async fn refuse(&self, id: &str, reason: &str) -> ClientResult<JobReply> {
        let body = json!({ "reason": reason });
        self.call(
            Method::POST,
            &format!("/agent/jobs/{id}/refuse"),
            Some(&body),
            Self::SHORT,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_need_a_scheme_and_no_api_path() {
        for good in [
            "http://127.0.0.1:8009",
            "https://hoop.company.com/",
            "https://gateway.company.com/hoop",
        ] {
            assert_eq!(check_server_url(good), Ok(()), "{good}");
        }
        assert_eq!(
            check_server_url("https://hoop.company.com/api/v1/"),
            Err(
                "https://hoop.company.com/api/v1/ is the API's address; give the server's own \
                 address instead: https://hoop.company.com"
                    .into()
            )
        );
        assert_eq!(
            check_server_url("hoop.company.com"),
            Err(
                "hoop.company.com is not a server address: it needs http:// or https://, e.g. \
                 http://hoop.company.com"
                    .into()
            )
        );
        assert!(check_server_url("ftp://hoop.company.com").is_err());
    }

    /// The agent replaces a refused result by a small one, but retries what looks transient: a
    /// result over the server's body limit must come back as the server's 413 (a refusal), not as
    /// a connection broken mid-upload, or the agent would retry it forever.
    #[tokio::test]
    async fn a_result_over_the_body_limit_is_a_refusal_not_a_transport_error() {
        crate::install_crypto_provider();
        let server = axum::Router::new()
            .route(
                "/api/v1/agent/jobs/{id}/result",
                axum::routing::post(|_: axum::body::Bytes| async { "{}" }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, server).await });
        let client = Client::new(&format!("http://{addr}"), "token");
        let result = ExecutionResult {
            stdout: Some("x".repeat(8 << 20)),
            ..ExecutionResult::default()
        };
        let refused = client.report("r1", &result).await.unwrap_err();
        assert!(
            matches!(refused, ClientError::Api { status, .. } if status == StatusCode::PAYLOAD_TOO_LARGE),
            "{refused:?}"
        );
        assert!(!refused.is_transient());
    }
}
