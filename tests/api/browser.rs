//! The web app in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver, with fantoccini). Signs in with a token, reads the exact command on the request
//! page, approves, and checks that a command written to break the page shows literally and runs
//! nothing.
//!
//! Needs `chromium` and `chromedriver` on the PATH (`.ci/run` installs them); without them the
//! test says it skips — and fails when `CI` is set.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{Backend, TestApp, eventually};

/// chromedriver on a free port, stopped (killed) when dropped, and a browser session on it.
struct Browser {
    client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium with a fresh profile and nothing that reaches the network by itself;
    /// `None` (the test skips) when chromedriver is not installed.
    async fn start() -> Option<Browser> {
        Browser::start_with(&[]).await
    }

    /// [`Browser::start`], with `extra` arguments for Chromium.
    async fn start_with(extra: &[&str]) -> Option<Browser> {
        let Some(chromedriver) = which("chromedriver") else {
            crate::helpers::skip("chromedriver (apt install chromium chromium-driver)");
            return None;
        };
        let chromium = which("chromium").expect("chromium beside chromedriver");
        hoopbot::install_crypto_provider();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let capabilities = json!({
            "goog:chromeOptions": { "binary": chromium, "args": args },
            // The console, where Chromium says what the Content-Security-Policy refused.
            "goog:loggingPrefs": { "browser": "ALL" }
        });
        let url = format!("http://127.0.0.1:{port}");
        let client = eventually(Duration::from_secs(20), || {
            let (url, capabilities) = (url.clone(), capabilities.clone());
            async move {
                let capabilities = capabilities.as_object().unwrap().clone();
                ClientBuilder::rustls()
                    .map_err(|e| e.to_string())?
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .map_err(|e| format!("chromedriver not ready: {e}"))
            }
        })
        .await;
        Some(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Signs in on the sign-in page the browser is at, with `token`.
    async fn sign_in(&self, token: &str) {
        let field = self.client.find(Locator::Id("token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.click("form[action='/login'] button").await;
    }

    async fn click(&self, css: &str) {
        let button = self.client.find(Locator::Css(css)).await;
        button
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Waits for the browser to be at `url` (a click does not wait for the navigation it starts).
    async fn until_at(&self, url: &str) {
        eventually(Duration::from_secs(10), || async {
            let at = self.client.current_url().await.map_err(|e| e.to_string())?;
            match at.as_str() == url {
                true => Ok(()),
                false => Err(format!("at {at}")),
            }
        })
        .await;
    }

    /// Goes to `path` of `app` and runs axe-core (`source`) on the page there: its violations,
    /// each as `{id, impact, help, nodes: [{target, summary}]}`, and the rules the page passed.
    async fn axe(&self, app: &TestApp, path: &str, source: &str) -> serde_json::Value {
        self.client.goto(&app.url(path)).await.unwrap();
        // Injected through WebDriver's script execution, which the page's CSP (`script-src
        // 'self'`, no inline scripts) does not govern; a page could not load it itself.
        let loaded = self
            .client
            .execute(&format!("{source}\n;return typeof window.axe;"), vec![])
            .await
            .unwrap();
        assert_eq!(loaded, json!("object"), "axe-core did not load on {path}");
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] }).then(
                   (results) => done({
                     violations: results.violations.map((v) => ({
                       id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })),
                     })),
                     passed: results.passes.map((p) => p.id),
                   }),
                   (error) => done({ error: String(error) }));",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            found.get("error").is_none(),
            "axe-core failed on {path}: {found}"
        );
        found
    }

    /// Waits for the page to say all of `texts` (a click does not wait for the navigation it
    /// starts, nor a live page for its reload).
    async fn until_page_says(&self, texts: &[&str]) {
        eventually(Duration::from_secs(10), || async {
            let source = self.client.source().await.map_err(|e| e.to_string())?;
            match texts.iter().all(|text| source.contains(text)) {
                true => Ok(()),
                false => Err(source),
            }
        })
        .await;
    }

    /// Waits for the browser to be on a request's page (where a submitted form leads).
    async fn until_on_a_request_page(&self) {
        eventually(Duration::from_secs(10), || async {
            let at = self.client.current_url().await.map_err(|e| e.to_string())?;
            match at.path().starts_with("/access-requests/") {
                true => Ok(()),
                false => Err(format!("at {at}")),
            }
        })
        .await;
    }

    /// What the page's Content-Security-Policy refused since the last call, as Chromium says it on
    /// the console (chromedriver hands the console over through Selenium's `se/log`).
    async fn csp_refusals(&self) -> Vec<String> {
        let log = self.client.issue_cmd(ConsoleLog).await.unwrap();
        log.as_array()
            .expect("the console's entries")
            .iter()
            .filter_map(|entry| entry["message"].as_str())
            .filter(|message| message.contains("Content Security Policy"))
            .map(str::to_string)
            .collect()
    }

    async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

/// chromedriver's `se/log` for the browser's console (not in W3C WebDriver; chromedriver keeps it).
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.into()),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_signs_in_reads_the_exact_command_and_approves() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let command = "UPDATE users SET status='inactive'\nWHERE id=123";
    let id = app.held(command).await;

    // Signed out, the request page leads to the sign-in page, and back after it.
    let page = app.url(&format!("/access-requests/{id}"));
    browser.client.goto(&page).await.unwrap();
    assert!(browser.client.current_url().await.unwrap().path() == "/login");
    browser.sign_in(app.token("bob@x.com")).await;
    browser.until_at(&page).await;

    // The command as it will run, line by line.
    assert_eq!(browser.text("pre.command").await, command);
    assert_eq!(
        browser.text("p.summary").await,
        "Waiting for approval from dba-team, security."
    );
    browser
        .client
        .find(Locator::XPath("//button[text()='Approve as dba-team']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The form posts and the page comes back with the approval (a click does not wait for the
    // navigation it starts).
    browser
        .until_page_says(&["dba-team</strong> — approved by bob@x.com (web)"])
        .await;
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["approval_groups"][0]["via"], "web");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_rejects_with_a_reason() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = app.held("DELETE FROM users").await;
    let page = app.url(&format!("/access-requests/{id}"));
    browser.client.goto(&page).await.unwrap();
    browser.sign_in(app.token("sam@x.com")).await;
    browser.until_at(&page).await;
    let reason = browser.client.find(Locator::Id("reason")).await.unwrap();
    reason
        .send_keys("no WHERE clause: this deletes every user")
        .await
        .unwrap();
    browser
        .client
        .find(Locator::XPath("//button[text()='Reject']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until_page_says(&["no WHERE clause: this deletes every user"])
        .await;
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["status"], "rejected");
    assert_eq!(
        request.body["rejection"]["reason"],
        "no WHERE clause: this deletes every user"
    );
    assert_eq!(request.body["rejection"]["via"], "web");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_from_the_run_page_shows_its_result_when_it_ran() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    browser
        .client
        .goto(&format!("{}?next=/run", app.url("/login")))
        .await
        .unwrap();
    browser.sign_in(app.token("alice@x.com")).await;
    browser.until_at(&app.url("/run")).await;
    // `counter` needs no approval: the request is ready at once, for its agent.
    browser
        .client
        .find(Locator::Css("select#connection option[value='counter']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let command = browser.client.find(Locator::Id("command")).await.unwrap();
    command.send_keys("select 41 + 1 as answer").await.unwrap();
    browser.click("form.run button[type=submit]").await;
    browser.until_on_a_request_page().await;

    // The agent runs it while the page is open; the page hears of it and shows the result.
    let target = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", target.path().join("t.db").display());
    let target = crate::execution::sqlite_target(&url);
    let agent = app.agent("racer", vec![("counter".into(), target)]).await;
    assert!(agent.run_once(Duration::ZERO).await.unwrap().is_some());
    browser
        .until_page_says(&["Executed: 1 row", " 42\n(1 row)"])
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_identity_provider() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let idp = crate::fake_idp::FakeIdp::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, &idp.config("")).await;
    idp.send_back_to("http://hoop.test", &app.url(""));
    idp.sign_in_next(crate::fake_idp::Person {
        email: "bob@x.com".into(),
        groups: vec![],
        flaw: None,
    });
    let id = app.held("SELECT 1").await;
    let page = app.url(&format!("/access-requests/{id}"));
    browser.client.goto(&page).await.unwrap();
    assert_eq!(browser.client.current_url().await.unwrap().path(), "/login");
    // To the provider, which signs Bob in at once, and back to the page he asked for.
    browser.click("a[href^='/login/oidc']").await;
    browser.until_at(&page).await;
    assert!(browser.text("header").await.contains("bob@x.com"));
    assert!(
        browser
            .client
            .source()
            .await
            .unwrap()
            .contains("Approve as dba-team")
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_written_to_break_the_page_shows_literally_and_runs_nothing() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let command = "SELECT '</pre><script>alert(1)</script><!--' -- \u{200b}";
    let reply = app.submit("alice@x.com", "prod-db", command).await;
    let id = reply.body["id"].as_str().unwrap().to_string();

    browser.client.goto(&app.url("/login")).await.unwrap();
    browser.sign_in(app.token("bob@x.com")).await;
    browser.until_at(&app.url("/access-requests")).await;
    browser
        .client
        .goto(&app.url(&format!("/access-requests/{id}")))
        .await
        .unwrap();
    // Shown as text, the hidden character made visible, inside the one `<pre>`.
    assert_eq!(
        browser.text("pre.command").await,
        "SELECT '</pre><script>alert(1)</script><!--' -- \\u{200b}"
    );
    // No alert opened, no script but the app's own made it into the page, and it is whole.
    assert!(browser.client.get_alert_text().await.is_err());
    let scripts = browser
        .client
        .execute(
            "return Array.from(document.scripts).map(s => new URL(s.src).pathname)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(scripts, json!(["/static/app.js"]));
    assert!(browser.text("#timeline").await.contains("Audit timeline"));
    // And the Content-Security-Policy had nothing to refuse: nothing tried to run.
    assert_eq!(browser.csp_refusals().await, Vec::<String>::new());
    // The check itself sees a refusal: a script written into the page now is refused.
    let ran = browser
        .client
        .execute(
            "const s = document.createElement('script'); s.textContent = 'window.ran = 1'; \
             document.body.appendChild(s); return window.ran === 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(ran, json!(false));
    let refused = browser.csp_refusals().await;
    assert!(
        refused.iter().any(|r| r.contains("script-src 'self'")),
        "{refused:?}"
    );
    browser.close().await;
}

/// Bob has the request page open; Sam approves through the API: Bob's page shows it without
/// Bob doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_request_page_shows_an_approval_made_through_the_api() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = app.held("DELETE FROM sessions WHERE expired").await;
    let page = app.url(&format!("/access-requests/{id}"));
    browser
        .client
        .goto(&format!("{}?next=/access-requests/{id}", app.url("/login")))
        .await
        .unwrap();
    browser.sign_in(app.token("bob@x.com")).await;
    browser.until_at(&page).await;
    // The page is listening once the server has a waiter on the request.
    app.until_parked(&id).await;
    app.approve("sam@x.com", &id, None).await;
    browser
        .until_page_says(&["security</strong> — approved by sam@x.com (api)"])
        .await;
    browser.close().await;
}

/// The Run page: Tab types a tab in the command; the request it makes counts down to its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_page_types_tabs_and_its_request_counts_down() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    browser
        .client
        .goto(&format!("{}?next=/run", app.url("/login")))
        .await
        .unwrap();
    browser.sign_in(app.token("alice@x.com")).await;
    browser.until_at(&app.url("/run")).await;
    let command = browser.client.find(Locator::Id("command")).await.unwrap();
    // U+E004 is WebDriver's Tab key.
    command.send_keys("SELECT 1\u{e004}AS x").await.unwrap();
    let typed = browser
        .client
        .execute("return document.getElementById('command').value", vec![])
        .await
        .unwrap();
    assert_eq!(typed, json!("SELECT 1\tAS x"));
    browser.click("form.run button[type=submit]").await;
    browser.until_on_a_request_page().await;
    // Its text as the page holds it (WebDriver's element text would show the tab as a space).
    let shown = browser
        .client
        .execute(
            "return document.querySelector('pre.command').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!("SELECT 1\tAS x\n"));
    let countdown = browser.text("time[data-countdown]").await;
    assert!(
        countdown.contains("UTC (in 29 min") || countdown.contains("UTC (in 30 min"),
        "{countdown}"
    );
    browser.close().await;
}

/// Regenerates the screenshots the README shows (docs/screenshots/*.png), light and dark:
///
///   cargo test --test api -- --ignored screenshots
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/screenshots; run on purpose"]
async fn screenshots() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = app
        .held("UPDATE users SET status = 'inactive'\nWHERE id = 123;")
        .await;
    app.approve("bob@x.com", &id, None).await;
    app.held("DELETE FROM sessions WHERE expires_at < now();")
        .await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    // Blink's preferred colour scheme: 1 light, 0 dark.
    for (scheme, setting) in [("light", "1"), ("dark", "0")] {
        let flags = [
            format!("--blink-settings=preferredColorScheme={setting}"),
            "--window-size=1200,900".to_string(),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let browser = Browser::start_with(&flags)
            .await
            .expect("chromium for screenshots");
        browser
            .client
            .goto(&format!("{}?next=/access-requests", app.url("/login")))
            .await
            .unwrap();
        browser.sign_in(app.token("sam@x.com")).await;
        browser.until_at(&app.url("/access-requests")).await;
        let list = browser.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("list-{scheme}.png")), list).unwrap();
        browser
            .client
            .goto(&app.url(&format!("/access-requests/{id}")))
            .await
            .unwrap();
        let page = browser.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("request-{scheme}.png")), page).unwrap();
        browser.close().await;
    }
}

/// axe-core's script, as `npm ci --prefix tests/a11y` installs it at the version the lockfile pins
/// (`.ci/run` does). `None` when it is not installed: the test says it skips, and fails when `CI`
/// is set.
fn axe_core() -> Option<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/a11y/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => {
            let why = format!(
                "the accessibility check needs axe-core, not installed ({}: {e}); \
                 install it with `npm ci --prefix tests/a11y`",
                path.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}. CI is set: nothing is skipped there");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// axe-core finds no serious or critical accessibility violation on the sign-in page, the list
/// (both views), a pending request page with its decision forms, one whose command carries
/// warnings, and the Run page, in the light colour scheme and the dark one (contrast differs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_pass_an_accessibility_check_light_and_dark() {
    let Some(axe) = axe_core() else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let pending = app
        .held("UPDATE users SET status = 'inactive'\nWHERE id = 123;")
        .await;
    // A hidden character (warned about) and a line longer than any window (the `<pre>` scrolls).
    let long = format!("SELECT '\u{200b}' AS x, {} FROM t;", "col, ".repeat(80));
    let warned = app.held(&long).await;
    let approved = app.held("DELETE FROM sessions WHERE expired").await;
    app.approve("sam@x.com", &approved, None).await;
    let pages = [
        "/login".to_string(),
        "/access-requests".into(),
        "/access-requests?view=all".into(),
        format!("/access-requests/{pending}"),
        format!("/access-requests/{warned}"),
        format!("/access-requests/{approved}"),
        "/run".into(),
    ];
    // Blink's preferred colour scheme: 1 light, 0 dark (as the screenshots test sets it).
    for (scheme, setting) in [("light", "1"), ("dark", "0")] {
        let flag = format!("--blink-settings=preferredColorScheme={setting}");
        let Some(browser) = Browser::start_with(&[&flag]).await else {
            return;
        };
        let mut serious = Vec::new();
        for path in &pages {
            if path != "/login" && browser.client.current_url().await.unwrap().path() == "/login" {
                browser.sign_in(app.token("bob@x.com")).await;
                browser.until_at(&app.url("/access-requests")).await;
            }
            let found = browser.axe(&app, path, &axe).await;
            // No violations because the rules ran and passed, not because they never ran.
            let passed = found["passed"].as_array().unwrap();
            assert!(passed.contains(&json!("color-contrast")), "{path}: {found}");
            for violation in found["violations"].as_array().unwrap() {
                let line = format!("{scheme} {path}: {violation}");
                match violation["impact"].as_str() {
                    Some("serious" | "critical") => serious.push(line),
                    // Shown with --nocapture; not what this test holds the pages to.
                    _ => eprintln!("minor: {line}"),
                }
            }
        }
        let dark = browser
            .client
            .execute(
                "return window.matchMedia('(prefers-color-scheme: dark)').matches",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(dark, json!(scheme == "dark"), "the {scheme} scheme took");
        browser.close().await;
        assert!(
            serious.is_empty(),
            "serious or critical accessibility violations:\n{}",
            serious.join("\n")
        );
    }
}
