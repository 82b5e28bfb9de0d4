//! A typed client for hoopbot's HTTP API, used by the CLI and by remote agents.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::domain::ExecutionResult;
use crate::http::view::{AccessRequestView, Page};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
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
        let transport = |source| ClientError::Transport {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(ClientError::Api {
            status,
            code: error["error"]["code"]
                .as_str()
                .unwrap_or("http_error")
                .to_string(),
            message: error["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("the server answered {status}")),
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

    // ---- the agent protocol ----

    pub async fn claim(&self, connections: &[String], wait: Duration) -> ClientResult<JobReply> {
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
