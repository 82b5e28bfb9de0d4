//! What the `hoop` CLI shows people: commands with their invisible characters made visible and
//! warned about, one-line fields that cannot forge lines, other users' program output made inert on
//! a terminal, closed groups, and errors that say what to fix. The real binary, against a server.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::processes::{Stack, finished, free_port, hoop};

on_both_backends!(
    requests_show_makes_invisible_characters_visible_and_warns,
    a_justification_cannot_forge_lines,
    groups_show_closed_once_the_request_is_decided,
    approving_says_which_group_and_what_is_left
);

/// `hoop ARGS` as `who` against `app`, run off the async workers (the server is in-process).
pub async fn cli(app: &TestApp, who: &str, args: &[&str]) -> Output {
    let mut command = hoop();
    command
        .args(args)
        .env("HOOP_URL", app.url(""))
        .env("HOOP_TOKEN", app.token(who))
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn submit(app: &TestApp, command: &str, justification: &str) -> String {
    let reply = app
        .post(
            "alice@x.com",
            "/api/v1/exec",
            Some(json!({ "connection": "prod-db", "command": command, "justification": justification })),
        )
        .await;
    assert_eq!(
        reply.status,
        reqwest::StatusCode::CREATED,
        "{:?}",
        reply.body
    );
    reply.body["id"].as_str().unwrap().to_string()
}

/// The reproduction: a zero-width space inside a quoted name looked like `'admin'`.
async fn requests_show_makes_invisible_characters_visible_and_warns(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = submit(
        &app,
        "DELETE FROM accts WHERE name <> 'admin\u{200b}';",
        "cleanup",
    )
    .await;
    let out = cli(&app, "bob@x.com", &["requests", "show", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.ends_with(
            "Warning     this command contains 1 invisible character (U+200B at line 1, column 39)\n\
             Command (43 bytes):\nDELETE FROM accts WHERE name <> 'admin\\u{200b}';\n"
        ),
        "{shown}"
    );
    assert!(!shown.contains('\u{200b}'), "{shown:?}");

    // A look-alike letter: Cyrillic а in "аdmin".
    let id = submit(&app, "DELETE FROM accts WHERE name = 'аdmin';", "cleanup").await;
    let shown = text(
        &cli(&app, "bob@x.com", &["requests", "show", &id])
            .await
            .stdout,
    );
    assert!(
        shown.contains(
            "Warning     this command contains 1 word mixing scripts (\"аdmin\" (Cyrillic U+0430 \
             among Latin letters) at line 1, column 33)\n"
        ),
        "{shown}"
    );

    // Approving by id alone still shows the warning.
    let out = cli(&app, "bob@x.com", &["requests", "approve", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Warning: this command contains 1 word mixing scripts (\"аdmin\" (Cyrillic U+0430 \
             among Latin letters) at line 1, column 33); see `hoop requests show {id}`\n"
        )
    );

    // The list has no room for the warning, but flags the request.
    let listed = text(&cli(&app, "bob@x.com", &["requests", "list"]).await.stdout);
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows.iter()
            .all(|row| row.ends_with("[see warning: hoop requests show]")),
        "{listed}"
    );
    assert!(
        listed.contains("'admin\\u{200b}';"),
        "escaped in the list too: {listed}"
    );
}

/// Reproduced: a justification with newlines printed fake approval and command lines above the
/// real command.
async fn a_justification_cannot_forge_lines(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let forged = "TICKET-1\nApprovals\n  dba-team         approved by bob@x.com via api at 2026-01-01\n\
                  SHA-256     0000\nCommand (8 bytes):\r\nSELECT 1";
    let id = submit(&app, "DROP TABLE accts;", forged).await;
    let reply = app
        .reject(
            "sam@x.com",
            &id,
            "no\nRejected    by root@x.com via api: fine",
        )
        .await;
    assert_eq!(reply.status, reqwest::StatusCode::OK, "{:?}", reply.body);

    let out = cli(&app, "bob@x.com", &["requests", "show", &id]).await;
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    let starting = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(starting("Approvals"), 1, "{shown}");
    assert_eq!(starting("Command ("), 1, "{shown}");
    assert_eq!(starting("SHA-256"), 1, "{shown}");
    assert_eq!(starting("Rejected"), 1, "{shown}");
    assert!(
        shown.contains(
            "Why         TICKET-1\\nApprovals\\n  dba-team         approved by bob@x.com via api at \
             2026-01-01\\nSHA-256     0000\\nCommand (8 bytes):\\r\\nSELECT 1\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "Rejected    by sam@x.com via api: no\\nRejected    by root@x.com via api: fine\n"
        ),
        "{shown}"
    );
    assert!(
        shown.ends_with("Command (17 bytes):\nDROP TABLE accts;\n"),
        "{shown}"
    );

    // The requester's view of the rejection is one line too.
    let out = cli(&app, "alice@x.com", &["requests", "wait", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Rejected by sam@x.com (api): no\\nRejected    by root@x.com via api: fine\n"
    );
}

/// Section 7: after a rejection, expiry or cancel no group is left "waiting".
async fn groups_show_closed_once_the_request_is_decided(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let rejected = submit(&app, "SELECT 1", "x").await;
    assert_eq!(
        app.approve("bob@x.com", &rejected, None).await.status,
        reqwest::StatusCode::OK
    );
    let pending = app.request(&rejected).await;
    assert_eq!(group_statuses(&pending), ["approved", "pending"]);
    app.reject("sam@x.com", &rejected, "not today").await;
    let request = app.request(&rejected).await;
    assert_eq!(request["status"], "rejected");
    assert_eq!(group_statuses(&request), ["approved", "closed"]);
    assert_eq!(request["approval_groups"][1]["decided_by"], Value::Null);

    let cancelled = submit(&app, "SELECT 2", "x").await;
    app.cancel("alice@x.com", &cancelled).await;
    assert_eq!(
        group_statuses(&app.request(&cancelled).await),
        ["closed", "closed"]
    );

    let shown = text(
        &cli(&app, "bob@x.com", &["requests", "show", &rejected])
            .await
            .stdout,
    );
    assert!(
        shown.contains("  dba-team         approved by bob@x.com (api) at "),
        "{shown}"
    );
    assert!(
        shown.contains("  security         closed (the request is rejected)\n"),
        "{shown}"
    );
    assert!(!shown.contains("waiting"), "{shown}");
    // Where it stands and what the reader may do, in the words every surface shares.
    assert!(
        shown.contains("Summary     Rejected by sam@x.com (api): not today\n"),
        "{shown}"
    );
    assert!(
        shown.contains("You may     nothing (It is already rejected.)\n"),
        "{shown}"
    );

    let expired = submit(&app, "SELECT 3", "x").await;
    app.advance(Duration::from_secs(3600));
    let request = app.request(&expired).await;
    assert_eq!(request["status"], "expired");
    assert_eq!(group_statuses(&request), ["closed", "closed"]);
    let out = cli(&app, "alice@x.com", &["requests", "wait", &expired]).await;
    assert!(
        text(&out.stderr).contains("without approval from dba-team, security."),
        "{}",
        text(&out.stderr)
    );
}

fn group_statuses(request: &Value) -> Vec<&str> {
    request["approval_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["status"].as_str().unwrap())
        .collect()
}

/// The approve reply says what happened, not "Approved. Request … is now pending."
async fn approving_says_which_group_and_what_is_left(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = submit(&app, "SELECT 1", "x").await;
    let out = cli(&app, "bob@x.com", &["requests", "approve", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!(
            "Approved request {id} for dba-team; still waiting for security.\n"
        )),
        "{said}"
    );
    let out = cli(&app, "sam@x.com", &["requests", "approve", &id]).await;
    assert!(
        text(&out.stdout).starts_with(&format!(
            "Approved request {id} for security; the request is now approved.\n"
        )),
        "{}",
        text(&out.stdout)
    );
}

/// What a program printed reaches a person's terminal inert: a title change, cursor movement and
/// colours are shown as escapes. `--raw`, and any pipe, get the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_output_is_escaped_on_a_terminal_and_exact_otherwise() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    let program = r"printf '\033]0;pwned\007\033[2Aok\n'; printf '\033[31merr\n' >&2";
    let exact_out = "\x1b]0;pwned\x07\x1b[2Aok\n";

    let screen = on_a_terminal(&stack, &["exec", "target", "-i", program]).await;
    assert!(
        screen.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2Aok\r\n"),
        "{screen:?}"
    );
    assert!(screen.contains("\\u{1b}[31merr\r\n"), "{screen:?}");
    assert!(
        !screen.contains("\x1b]0;") && !screen.contains("\x1b[2A") && !screen.contains("\x1b[31m"),
        "{screen:?}"
    );

    let screen = on_a_terminal(&stack, &["exec", "target", "--raw", "-i", program]).await;
    assert!(
        screen.contains("\x1b]0;pwned\x07\x1b[2Aok\r\n"),
        "{screen:?}"
    );
    assert!(screen.contains("\x1b[31merr\r\n"), "{screen:?}");

    // Into a pipe: byte for byte, with or without --raw.
    let exec = stack.exec(&["-i", program]);
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!((code, stdout.as_str()), (0, exact_out), "{stderr}");
    assert!(stderr.ends_with("\x1b[31merr\n"), "{stderr:?}");

    // `requests wait` of a request that already ran shows it the same way.
    let screen = under_a_terminal(&stack, &["requests", "wait", &id], false).await;
    assert!(
        screen.contains("\\u{1b}]0;pwned\\u{7}\\u{1b}[2Aok\r\n"),
        "{screen:?}"
    );
    let piped = stack.hoop_as("alice@x.com", &["requests", "wait", &id]);
    assert_eq!(text(&piped.stdout), exact_out);
}

/// Runs `hoop ARGS` as alice under a pseudo-terminal (`script`, as a person's shell would),
/// approves the request it submits, and returns everything that reached the screen.
async fn on_a_terminal(stack: &Stack, args: &[&str]) -> String {
    under_a_terminal(stack, args, true).await
}

/// `hoop ARGS` as alice under a pseudo-terminal; `approve`: approve the request it submits.
async fn under_a_terminal(stack: &Stack, args: &[&str], approve: bool) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_hoop").to_string())
        .chain(
            args.iter()
                .map(|a| format!("'{}'", a.replace('\'', r"'\''"))),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HOOP_URL", &stack.url)
        .env("HOOP_TOKEN", &stack.tokens["alice@x.com"])
        .env("HOOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let _ = stdout.read_to_end(&mut screen);
        screen
    });
    if approve {
        let id = stack.pending_request().await;
        stack.approve_as_both(&id).await;
    }
    let screen = tokio::task::spawn_blocking(move || {
        let screen = reader.join().unwrap();
        let _ = child.wait();
        screen
    })
    .await
    .unwrap();
    text(&screen)
}

/// Reproduced: `hoop agent … 2>&1 | tee agent.log`, then Ctrl-C also ended `tee`; the agent died
/// on its next log line and the job it ran was never reported. Logging must never stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_stderr_is_closed_still_runs_and_reports_jobs() {
    let mut stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    stack.stop_agent();
    let mut agent = hoop()
        .args(["agent", "--config"])
        .arg(stack.path("agent.toml"))
        .env("HOOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first log line arrives, plain (no colours into a pipe); then the reader goes away.
    let mut stderr = agent.stderr.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\n") && stderr.read(&mut byte).unwrap() == 1 {
            seen.push(byte[0]);
        }
        text(&seen)
    })
    .await
    .unwrap();
    assert!(first.contains("agent started"), "{first:?}");
    assert!(!first.contains('\x1b'), "no colours into a pipe: {first:?}");

    let exec = stack.exec(&["-i", "echo still here"]);
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    // The agent logs as it claims, runs and reports, each into the closed pipe.
    let mut request = Value::Null;
    for _ in 0..10 {
        let version = request["version"].as_i64().unwrap_or(0);
        request = stack
            .api(
                "bob@x.com",
                Method::GET,
                &format!("/access-requests/{id}/wait?version={version}&timeout_s=10"),
                None,
            )
            .await;
        if request["status"] == "executed" || request["status"] == "failed" {
            break;
        }
    }
    assert_eq!(request["status"], "executed", "{request}");
    assert_eq!(request["result"]["stdout"], "still here\n");
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
    let (code, stdout, _) = finished(exec).await;
    assert_eq!((code, stdout.as_str()), (0, "still here\n"));
    let _ = agent.kill();
    let _ = agent.wait();
}

/// Losing the server while waiting is said once in full, then briefly at each retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_server_while_waiting_is_said_once() {
    let mut stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    let exec = stack.exec(&["-i", "echo back"]);
    let id = stack.pending_request().await;
    // Down long enough for the failure at once and the retry a second later.
    stack.restart_server(Duration::from_millis(3500)).await;
    stack.approve_as_both(&id).await;
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!((code, stdout.as_str()), (0, "back\n"), "{stderr}");
    assert_eq!(
        stderr.matches("Lost contact with the server").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches(&format!("hoop requests wait {id}")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("Still no answer; retrying in "), "{stderr}");
    assert!(
        stderr.contains("Back in contact with the server."),
        "{stderr}"
    );
}

/// Client errors say what is wrong and what to set, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_say_what_to_fix() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let port = app.addr.port();
    let with_url = |url: String| {
        let mut command = hoop();
        command
            .args(["requests", "list"])
            .env("HOOP_URL", url)
            .env("HOOP_TOKEN", app.token("bob@x.com"))
            .stdin(Stdio::null());
        async move {
            let out = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            assert_eq!(out.status.code(), Some(1));
            text(&out.stderr)
        }
    };

    assert_eq!(
        with_url(format!("http://127.0.0.1:{port}/api/v1")).await,
        format!(
            "error: HOOP_URL: http://127.0.0.1:{port}/api/v1 is the API's address; give the \
             server's own address instead: http://127.0.0.1:{port}\n"
        )
    );
    assert_eq!(
        with_url(format!("127.0.0.1:{port}")).await,
        format!(
            "error: HOOP_URL: 127.0.0.1:{port} is not a server address: it needs http:// or \
             https://, e.g. http://127.0.0.1:{port}\n"
        )
    );
    let tls = with_url(format!("https://127.0.0.1:{port}")).await;
    assert_eq!(
        tls,
        format!(
            "error: cannot reach the server at https://127.0.0.1:{port}: no TLS there: is the \
             server http:// rather than https://?\n"
        )
    );
    assert_eq!(
        with_url(format!("http://127.0.0.1:{port}/hoop")).await,
        format!(
            "error: http://127.0.0.1:{port}/hoop has no such endpoint (/access-requests): is it \
             the hoopbot server's own address?\n"
        )
    );
    let nobody = free_port();
    assert_eq!(
        with_url(format!("http://127.0.0.1:{nobody}")).await,
        format!(
            "error: cannot reach the server at http://127.0.0.1:{nobody}: connection refused \
             (is `hoop serve` running at that address?)\n"
        )
    );
}

/// A connection name or email that cannot be one is refused as the command line is read, saying
/// what is wrong, before any server or database is asked.
#[test]
fn malformed_names_and_emails_are_refused_on_the_command_line() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let cases: [(&[&str], &str); 4] = [
        (
            &["exec", "prod db", "-i", "SELECT 1"],
            "\"prod db\" is not a connection name: use letters, digits, '-', '_' or '.'",
        ),
        (
            &["requests", "list", "--connection", "prod/db"],
            "\"prod/db\" is not a connection name",
        ),
        (
            &["requests", "list", "--requester", "bob"],
            "\"bob\" is not an email address",
        ),
        (
            &[
                "token",
                "create",
                "alice",
                "--config",
                "/nonexistent/hoop.toml",
            ],
            "\"alice\" is not an email address",
        ),
    ];
    for (args, message) in cases {
        let out = hoop()
            .args(args)
            .env("HOOP_URL", &nobody)
            .env("HOOP_TOKEN", "hoop_x")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("cannot reach"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_agent_refuses_a_server_url_without_its_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[agent]\nserver_url = \"hoop.internal:8009\"\ntoken = \"hoop_x\"\n\n[[connections]]\nname = \"box\"\ntype = \"command\"\ncommand = [\"bash\"]\n",
    )
    .unwrap();
    let out = hoop()
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: [agent] server_url: hoop.internal:8009 is not a server address: it needs \
             http:// or https://, e.g. http://hoop.internal:8009\n",
            config.display()
        )
    );
}

#[test]
fn help_describes_every_argument() {
    let help = |args: &[&str]| text(&hoop().args(args).arg("-h").output().unwrap().stdout);
    let reject = help(&["requests", "reject"]);
    assert!(reject.contains("<ID>  The request's id"), "{reject}");
    assert!(
        reject.contains("Why: shown to the requester and kept in the audit trail"),
        "{reject}"
    );
    for command in ["show", "approve", "cancel", "wait"] {
        let shown = help(&["requests", command]);
        assert!(shown.contains("<ID>  The request's id"), "{shown}");
    }
    let cancel = help(&["requests", "cancel"]);
    assert!(
        cancel.contains("or any as an admin, while pending or approved but not started"),
        "{cancel}"
    );
    let list = help(&["requests", "list"]);
    assert!(list.contains("How many requests to list"), "{list}");
    let wait = help(&["requests", "wait"]);
    assert!(wait.contains("How to print the outcome"), "{wait}");
    assert!(wait.contains("--raw"), "{wait}");
    let revoke = help(&["token", "revoke"]);
    assert!(
        revoke.contains(
            "Usage: hoop token revoke [OPTIONS] <TOKEN|--id <ID>|--user <EMAIL>|--agent <NAME>>"
        ),
        "{revoke}"
    );
}
