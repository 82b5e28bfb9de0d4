//! A webhook receiver for the delivery tests: an HTTP server on 127.0.0.1 that checks every
//! request's Standard Webhooks signature with the `standardwebhooks` crate (an implementation
//! independent of hoopbot's), records what arrived, and answers from a script, so tests can make
//! a receiver fail, throttle, hang up or go down and watch what the deliveries do.
//!
//! It is a bare hyper server rather than an axum app because hanging up without an answer
//! ([`Reply::Drop`]) needs the connection itself, which hyper closes when the service fails.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use standardwebhooks::Webhook;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, with an empty body.
    Status(u16),
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// Hang up without answering: the sender sees a connection error.
    Drop,
    /// Wait this long, then answer 200.
    Delay(Duration),
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `webhook-id` header, if any.
    pub id: Option<String>,
    /// The `webhook-timestamp` header, if any and a number.
    pub timestamp: Option<i64>,
    /// The body as JSON; `Null` if it was not JSON.
    pub body: Value,
    /// Whether the signature verified for this body, id and timestamp, and the timestamp was
    /// within five minutes of now (the `standardwebhooks` crate's rule).
    pub verified: bool,
    pub arrived: Instant,
    /// How it was answered.
    pub reply: Reply,
}

struct State {
    webhook: Webhook,
    requests: Mutex<Vec<Received>>,
    plan: Mutex<VecDeque<Reply>>,
    down: AtomicBool,
}

/// A receiver listening on a random port; stops when dropped.
pub struct Receiver {
    url: String,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that verifies with `secret` (`whsec_…`) and answers 200 to everything
    /// until told otherwise.
    pub async fn start(secret: &str) -> Receiver {
        let state = Arc::new(State {
            webhook: Webhook::new(secret).expect("a valid whsec_ secret"),
            requests: Mutex::default(),
            plan: Mutex::default(),
            down: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, state.clone()));
        Receiver { url, state, server }
    }

    /// Where to deliver: `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request that reached the receiver while it was up, in order of arrival.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Queues these answers for the next requests, after any already queued; once the queue is
    /// empty, requests are answered 200.
    pub fn plan(&self, replies: Vec<Reply>) {
        self.state.plan.lock().unwrap().extend(replies);
    }

    /// While down, every connection is closed on arrival and every request on an open one is
    /// hung up on, unanswered and unrecorded; the plan waits.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Waits until at least `n` requests have arrived and returns them all; fails the test, with
    /// what did arrive, if that takes longer than `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::helpers::eventually(timeout, || async {
            let requests = self.requests();
            if requests.len() >= n {
                Ok(requests)
            } else {
                Err(format!(
                    "expected {n} webhook requests, got {}: {requests:#?}",
                    requests.len()
                ))
            }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Ends the accept loop, and with its JoinSet every open connection.
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        if state.down.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let state = state.clone();
        let service = service_fn(move |request| answer(state.clone(), request));
        connections.spawn(async move {
            // A failed connection is what Reply::Drop and being down are for.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The service's error: hyper closes the connection without answering.
#[derive(Debug)]
struct HangUp;

impl fmt::Display for HangUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the test receiver hangs up")
    }
}

impl std::error::Error for HangUp {}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HangUp> {
    if state.down.load(Ordering::SeqCst) {
        return Err(HangUp);
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| HangUp)?.to_bytes();
    let header = |name: &str| {
        let value = parts.headers.get(name)?.to_str().ok()?;
        Some(value.to_string())
    };
    let reply = state
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Status(200));
    state.requests.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").and_then(|t| t.parse().ok()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified: state.webhook.verify(&body, &parts.headers).is_ok(),
        arrived: Instant::now(),
        reply: reply.clone(),
    });
    let status = |code: u16| {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::from_u16(code).expect("a valid status code");
        response
    };
    Ok(match reply {
        Reply::Status(code) => status(code),
        Reply::TooManyRequests { retry_after_secs } => {
            let mut response = status(429);
            response
                .headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            response
        }
        Reply::Drop => return Err(HangUp),
        Reply::Delay(wait) => {
            tokio::time::sleep(wait).await;
            status(200)
        }
    })
}

/// The receiver's own checks, before any delivery test leans on it.
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn now() -> i64 {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(since_epoch.as_secs()).unwrap()
    }

    /// Posts `body` signed with `secret` by the `standardwebhooks` crate.
    async fn post(
        client: &reqwest::Client,
        url: &str,
        secret: &str,
        id: &str,
        body: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let body = body.to_string();
        let timestamp = now();
        let signature = Webhook::new(secret)
            .unwrap()
            .sign(id, timestamp, body.as_bytes())
            .unwrap();
        client
            .post(url)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
    }

    fn client() -> reqwest::Client {
        hoopbot::install_crypto_provider();
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn records_whether_each_signature_verifies() {
        let receiver = Receiver::start(SECRET).await;
        let client = client();
        let url = receiver.url();
        let before = Instant::now();

        let good = post(&client, &url, SECRET, "msg_good", json!({"n": 1})).await;
        assert_eq!(good.unwrap().status(), 200);
        let forged = post(&client, &url, OTHER_SECRET, "msg_forged", json!({"n": 2})).await;
        assert_eq!(forged.unwrap().status(), 200);
        let unsigned = client.post(&url).body("not json").send().await;
        assert_eq!(unsigned.unwrap().status(), 200);

        let received = receiver.wait_for(3, Duration::from_secs(5)).await;
        assert_eq!(received.len(), 3, "{received:#?}");
        let (good, forged, unsigned) = (&received[0], &received[1], &received[2]);
        assert!(good.verified, "{good:#?}");
        assert_eq!(good.id.as_deref(), Some("msg_good"));
        assert!((now() - good.timestamp.unwrap()).abs() <= 2, "{good:#?}");
        assert_eq!(good.body, json!({"n": 1}));
        assert!(good.arrived >= before && good.arrived <= forged.arrived);
        assert_eq!(good.reply, Reply::Status(200));

        assert!(!forged.verified, "{forged:#?}");
        assert_eq!(forged.id.as_deref(), Some("msg_forged"));
        assert_eq!(forged.body, json!({"n": 2}));

        assert!(!unsigned.verified);
        assert_eq!((unsigned.id.as_ref(), unsigned.timestamp), (None, None));
        assert_eq!(unsigned.body, Value::Null);
    }

    #[tokio::test]
    async fn answers_from_the_plan_then_200_and_hangs_up_when_told() {
        let receiver = Receiver::start(SECRET).await;
        let client = client();
        let url = receiver.url();
        let send = |id: &'static str| post(&client, &url, SECRET, id, json!({"id": id}));
        receiver.plan(vec![
            Reply::Status(503),
            Reply::TooManyRequests {
                retry_after_secs: 7,
            },
            Reply::Drop,
            Reply::Delay(Duration::from_millis(200)),
        ]);

        assert_eq!(send("a").await.unwrap().status(), 503);
        let throttled = send("b").await.unwrap();
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "7");
        let dropped = send("c").await.unwrap_err();
        let hung_up =
            std::iter::successors(Some(&dropped as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .filter_map(|e| e.downcast_ref::<hyper::Error>())
            .any(hyper::Error::is_incomplete_message);
        assert!(
            hung_up,
            "not a connection closed without an answer: {dropped:?}"
        );
        let started = Instant::now();
        assert_eq!(send("d").await.unwrap().status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(send("e").await.unwrap().status(), 200);

        receiver.set_down(true);
        assert!(send("down, pooled connection").await.is_err());
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        assert!(
            post(&fresh, &url, SECRET, "down, new connection", json!({}))
                .await
                .is_err()
        );
        receiver.set_down(false);
        assert_eq!(send("f").await.unwrap().status(), 200);

        let received = receiver.wait_for(6, Duration::from_secs(5)).await;
        let answered: Vec<(&str, &Reply)> = received
            .iter()
            .map(|r| (r.id.as_deref().unwrap(), &r.reply))
            .collect();
        assert_eq!(
            answered,
            [
                ("a", &Reply::Status(503)),
                (
                    "b",
                    &Reply::TooManyRequests {
                        retry_after_secs: 7
                    }
                ),
                ("c", &Reply::Drop),
                ("d", &Reply::Delay(Duration::from_millis(200))),
                ("e", &Reply::Status(200)),
                ("f", &Reply::Status(200)),
            ]
        );
        assert!(received.iter().all(|r| r.verified), "{received:#?}");
    }
}
