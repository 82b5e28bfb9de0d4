//! A fake Slack on loopback: the Web API methods hoopbot calls, answered as Slack documents them
//! (`{"ok": true, …}`), every call recorded, and failures (429 with `Retry-After`, 500) injected
//! on demand; plus a way to send hoopbot what Slack would send it, signed with the app's secret.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The signing secret of the test app (Slack's documentation example).
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_TOKEN: &str = "xoxb-test-bot-token";
/// The default channel for request cards in the test config.
pub const CHANNEL: &str = "C0HOOPCARDS";
/// The workspace the bot token belongs to (what `auth.test` says), which payloads name.
pub const TEAM: &str = "T0TEST";
/// The test app's id, set as `slack.app_id` in the test config, which payloads name.
pub const APP_ID: &str = "A0HOOPAPP01";

/// One Web API call as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, `chat.update`, …
    pub method: String,
    /// The JSON body, the form or query parameters as JSON.
    pub body: Value,
    pub authorization: Option<String>,
}

/// How the fake answers a call, when not as Slack normally would.
#[derive(Debug, Clone)]
pub enum Failure {
    Status(u16),
    TooManyRequests {
        retry_after_secs: u64,
    },
    /// `{"ok": false, "error": code}`
    Refuse(&'static str),
    /// No answer at all: the call hangs until the caller gives up.
    Hang,
    /// The usual answer, this long after the call.
    Slow(std::time::Duration),
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    failures: Mutex<HashMap<String, VecDeque<Failure>>>,
    /// users.info answers, by user id: (email, is_email_confirmed).
    users: Mutex<HashMap<String, (String, bool)>>,
    /// apps.connections.open's answer.
    socket_url: Mutex<Option<String>>,
    next_ts: AtomicU64,
    /// Hanging calls their caller gave up on.
    hangs_ended: AtomicU64,
}

/// Counts a hanging call as ended when its handler is dropped.
struct HangEnds(Arc<Fake>);

impl Drop for HangEnds {
    fn drop(&mut self) {
        self.0.hangs_ended.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct FakeSlack {
    url: String,
    fake: Arc<Fake>,
    server: JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let fake = Arc::new(Fake::default());
        fake.next_ts.store(1_700_000_000_000_100, Ordering::Relaxed);
        let app = Router::new()
            .route("/api/{method}", any(answer))
            .with_state(fake.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeSlack { url, fake, server }
    }

    /// A `[slack]` section for hoopbot pointing at this fake, for the app [`APP_ID`], with
    /// `extra` lines.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "\n[slack]\nsigning_secret = \"{SIGNING_SECRET}\"\nbot_token = \"{BOT_TOKEN}\"\n\
             app_id = \"{APP_ID}\"\nchannel = \"{CHANNEL}\"\napi_base_url = \"{}\"\n\
             message_interval = \"1ms\"\n{extra}\n",
            self.url
        )
    }

    pub fn calls(&self) -> Vec<Call> {
        self.fake.calls.lock().unwrap().clone()
    }

    /// The calls of one method, in order.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The next calls of `method` fail as `failures` say, in order.
    pub fn fail(&self, method: &str, failures: impl IntoIterator<Item = Failure>) {
        self.fake
            .failures
            .lock()
            .unwrap()
            .entry(method.to_string())
            .or_default()
            .extend(failures);
    }

    /// How many calls made to hang (`Failure::Hang`) their caller has given up on so far.
    pub fn hangs_ended(&self) -> u64 {
        self.fake.hangs_ended.load(Ordering::SeqCst)
    }

    /// What `users.info` says of `user`.
    pub fn user(&self, user: &str, email: &str, confirmed: bool) {
        self.fake
            .users
            .lock()
            .unwrap()
            .insert(user.to_string(), (email.to_string(), confirmed));
    }

    /// What `apps.connections.open` answers (Socket Mode's WebSocket URL).
    pub fn socket_url(&self, url: &str) {
        *self.fake.socket_url.lock().unwrap() = Some(url.to_string());
    }
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        json!(query)
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| {
            let form: HashMap<String, String> =
                serde_urlencoded::from_bytes(&body).unwrap_or_default();
            json!(form)
        })
    };
    fake.calls.lock().unwrap().push(Call {
        method: method.clone(),
        body: body.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let failure = fake
        .failures
        .lock()
        .unwrap()
        .get_mut(&method)
        .and_then(VecDeque::pop_front);
    match failure {
        Some(Failure::Status(status)) => {
            return (StatusCode::from_u16(status).unwrap(), "upstream trouble").into_response();
        }
        Some(Failure::TooManyRequests { retry_after_secs }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_secs.to_string())],
                axum::Json(json!({ "ok": false, "error": "ratelimited" })),
            )
                .into_response();
        }
        Some(Failure::Refuse(code)) => {
            return axum::Json(json!({ "ok": false, "error": code })).into_response();
        }
        Some(Failure::Hang) => {
            // Counted when the caller gives up on it (and drops the connection).
            let _ended = HangEnds(fake.clone());
            std::future::pending().await
        }
        Some(Failure::Slow(wait)) => tokio::time::sleep(wait).await,
        None => {}
    }
    let ts = || {
        let n = fake.next_ts.fetch_add(1, Ordering::Relaxed);
        format!("{}.{:06}", n / 1_000_000, n % 1_000_000)
    };
    let answer = match method.as_str() {
        "chat.postMessage" => {
            let ts = ts();
            json!({ "ok": true, "channel": body["channel"], "ts": ts,
                    "message": { "ts": ts, "text": body["text"], "type": "message" } })
        }
        "chat.update" => json!({ "ok": true, "channel": body["channel"], "ts": body["ts"],
                                 "text": body["text"], "message": { "text": body["text"] } }),
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": ts() }),
        "conversations.open" => {
            // A comma-separated string in a form, an array in JSON (as slack-morphism sends it).
            let user = match &body["users"] {
                Value::Array(users) => users[0].as_str().unwrap_or_default().to_string(),
                users => users
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            json!({ "ok": true, "channel": { "id": format!("D{user}") } })
        }
        "views.open" => {
            let mut view = body["view"].clone();
            view["id"] = json!("V0001");
            view["team_id"] = json!("T0TEST");
            view["hash"] = json!("1.abc");
            json!({ "ok": true, "view": view })
        }
        "users.info" => {
            let id = body["user"].as_str().unwrap_or_default();
            match fake.users.lock().unwrap().get(id) {
                Some((email, confirmed)) => json!({ "ok": true, "user": {
                    "id": id, "team_id": "T0TEST", "name": id,
                    "is_email_confirmed": confirmed,
                    "profile": { "email": email, "real_name": id } } }),
                None => json!({ "ok": false, "error": "user_not_found" }),
            }
        }
        "users.lookupByEmail" => {
            let email = body["email"].as_str().unwrap_or_default();
            let users = fake.users.lock().unwrap();
            match users
                .iter()
                .find(|(_, (e, _))| e.eq_ignore_ascii_case(email))
            {
                Some((id, (email, confirmed))) => json!({ "ok": true, "user": {
                    "id": id, "team_id": "T0TEST", "name": id,
                    "is_email_confirmed": confirmed,
                    "profile": { "email": email, "real_name": id } } }),
                None => json!({ "ok": false, "error": "users_not_found" }),
            }
        }
        "auth.test" => {
            json!({ "ok": true, "url": "https://hoop-test.slack.com/", "team": "Hoop Test",
                               "user": "hoopbot", "team_id": TEAM, "user_id": "U0BOT", "bot_id": "B0BOT" })
        }
        "conversations.info" => json!({ "ok": true, "channel": {
            "id": body["channel"], "name": "approvals", "is_member": true, "is_archived": false } }),
        "apps.connections.open" => match fake.socket_url.lock().unwrap().clone() {
            Some(url) => json!({ "ok": true, "url": url }),
            None => json!({ "ok": false, "error": "invalid_auth" }),
        },
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    axum::Json(answer).into_response()
}

/// Sends hoopbot what Slack would: `body` to `path`, signed now with [`SIGNING_SECRET`].
pub async fn send_signed(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = hoopbot::slack::signature::sign(SIGNING_SECRET, &timestamp, body.as_bytes());
    client
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A slash command's form, as Slack posts it from [`TEAM`] for [`APP_ID`]. Each has a
/// `trigger_id` of its own, as Slack's do, so no two are the same request.
pub fn command_form(user: &str, text: &str) -> String {
    let trigger_id = trigger_id(user);
    serde_urlencoded::to_string([
        ("token", "deprecated-verification-token"),
        ("team_id", TEAM),
        ("team_domain", "hoop-test"),
        ("channel_id", CHANNEL),
        ("channel_name", "approvals"),
        ("user_id", user),
        ("user_name", user),
        ("command", "/hoop"),
        ("text", text),
        ("api_app_id", APP_ID),
        ("is_enterprise_install", "false"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0TEST/1/x",
        ),
        ("trigger_id", &trigger_id),
    ])
    .unwrap()
}

/// A `trigger_id` no other payload of this test run has.
fn trigger_id(user: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.{n}.trigger.{user}",
        chrono::Utc::now().timestamp_micros()
    )
}

/// `form` (a slash command's, or an interaction's `payload=…`) with `change` made to it: to its
/// fields as JSON (`{"team_id": …}`), or to the interaction's payload.
pub fn altered(form: &str, change: impl FnOnce(&mut Value)) -> String {
    let mut fields: Vec<(String, String)> = serde_urlencoded::from_str(form).unwrap();
    if let [(name, payload)] = fields.as_mut_slice()
        && name == "payload"
    {
        let mut payload_json: Value = serde_json::from_str(payload).unwrap();
        change(&mut payload_json);
        *payload = payload_json.to_string();
        return serde_urlencoded::to_string(fields).unwrap();
    }
    let mut json = Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    );
    change(&mut json);
    let fields: Vec<(String, String)> = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    serde_urlencoded::to_string(fields).unwrap()
}

/// A `block_actions` payload for a click by `user` on the button `action_id` with `value`, on the
/// card `card` (as posted) in `channel`, shaped like Slack's.
pub fn click_form(user: &str, channel: &str, card: &Value, action_id: &str, value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": user, "name": user, "team_id": TEAM },
        "api_app_id": APP_ID,
        "token": "deprecated-verification-token",
        "container": { "type": "message", "message_ts": "1700000000.000100", "channel_id": channel, "is_ephemeral": false },
        "trigger_id": trigger_id(user),
        "team": { "id": TEAM, "domain": "hoop-test" },
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": { "id": channel, "name": "approvals" },
        "message": { "type": "message", "ts": "1700000000.000100", "bot_id": "B0BOT", "user": "U0BOT",
                     "text": card["text"], "blocks": card["blocks"] },
        "state": { "values": {} },
        "response_url": "https://hooks.slack.com/actions/T0TEST/1/x",
        "actions": [{
            "action_id": action_id, "block_id": "decide",
            "text": { "type": "plain_text", "text": "Approve", "emoji": true },
            "value": value, "type": "button", "action_ts": "1700000001.000200"
        }]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A `view_submission` of the reject modal `view` (as hoopbot opened it) with `reason`.
pub fn reason_form(user: &str, view: &Value, reason: &str) -> String {
    let mut view = view.clone();
    view["id"] = json!("V0001");
    view["team_id"] = json!("T0TEST");
    view["hash"] = json!("1.abc");
    view["state"] = json!({ "values": { "reason": { "reason": { "type": "plain_text_input", "value": reason } } } });
    let payload = json!({
        "type": "view_submission",
        "team": { "id": TEAM, "domain": "hoop-test" },
        "user": { "id": user, "username": user, "name": user, "team_id": TEAM },
        "api_app_id": APP_ID,
        "token": "deprecated-verification-token",
        "trigger_id": trigger_id(user),
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A fake of Slack's Socket Mode side: a WebSocket server on loopback that `apps.connections.open`
/// points at. Each connection hoopbot opens is counted and handed to the test, in the order they
/// were opened; the test plays Slack on it.
pub struct SocketServer {
    url: String,
    accepted: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Socket>>,
    opened: Arc<AtomicU64>,
    server: JoinHandle<()>,
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

impl SocketServer {
    pub async fn start() -> SocketServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/link/?ticket=test", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let opened = Arc::new(AtomicU64::new(0));
        let counter = opened.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(socket) = tokio_tungstenite::accept_async(stream).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(socket);
                }
            }
        });
        SocketServer {
            url,
            accepted: tokio::sync::Mutex::new(rx),
            opened,
            server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many WebSocket connections hoopbot has opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }

    /// The next connection hoopbot opens (in the order opened), greeted with Slack's `hello`.
    pub async fn next(&self) -> Socket {
        use futures_util::SinkExt;
        let mut socket = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            self.accepted
                .lock()
                .await
                .recv()
                .await
                .expect("the server runs")
        })
        .await
        .expect("hoopbot connects within 20 s");
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                envelopes()["hello"].to_string(),
            ))
            .await
            .unwrap();
        socket
    }
}

/// Returns once hoopbot has closed `socket` (a close frame, or the connection ends).
pub async fn until_closed(socket: &mut Socket) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "hoopbot did not close the socket within 10 s"
    );
}

/// Slack's Socket Mode messages as python-slack-sdk's tests use them (`tests/data`).
pub fn envelopes() -> Value {
    serde_json::from_str(include_str!("../data/slack-socket-mode-envelopes.json")).unwrap()
}

/// Sends `envelope` on `socket` and returns the acknowledgement with its `envelope_id`.
pub async fn exchange(socket: &mut Socket, envelope: &Value) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket
        .send(Message::text(envelope.to_string()))
        .await
        .unwrap();
    let id = &envelope["envelope_id"];
    let acknowledged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let message = socket.next().await.expect("the socket stays open").unwrap();
            if let Message::Text(text) = message {
                let ack: Value = serde_json::from_str(&text).unwrap();
                if ack["envelope_id"] == *id {
                    return ack;
                }
            }
        }
    });
    acknowledged
        .await
        .unwrap_or_else(|_| panic!("no acknowledgement of {id} within 10 s"))
}
