//! The web app's admin pages (audit log, webhooks, configuration) and the Run page's file
//! upload, over HTTP as a browser uses them.

use reqwest::StatusCode;
use reqwest::header::LOCATION;

use crate::audit_trail::tamper;
use crate::helpers::{AUDIT_KEY, Backend, MAX_COMMAND_BYTES, TestApp};
use crate::on_both_backends;
use crate::web::{browser, csrf_in, page, sign_in};

on_both_backends!(
    only_admins_see_the_admin_pages,
    the_audit_log_filters_pages_and_says_whether_the_chain_verifies,
    the_webhooks_page_lists_deliveries_and_no_secret,
    the_configuration_page_shows_no_secret,
    a_script_uploaded_on_the_run_page_is_the_command_byte_for_byte,
);

const ADMIN_PAGES: [&str; 4] = [
    "/admin/tokens",
    "/admin/audit",
    "/admin/webhooks",
    "/admin/config",
];

async fn only_admins_see_the_admin_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = sign_in(&app, "bob@x.com").await;
    let root = sign_in(&app, "root@x.com").await;
    for path in ADMIN_PAGES {
        let (status, html) = page(&app, &bob, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(html.contains("this page is for admins"), "{path}: {html}");

        let signed_out = browser().get(app.url(path)).send().await.unwrap();
        assert_eq!(signed_out.status(), StatusCode::SEE_OTHER, "{path}");
        let to = signed_out.headers()[LOCATION].to_str().unwrap();
        assert_eq!(to, format!("/login?next={}", path.replace('/', "%2F")));

        let (status, html) = page(&app, &root, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
    }
    // The admin nav is in every page's header for admins, and for nobody else.
    let (_, html) = page(&app, &root, "/access-requests").await;
    for link in [
        "<a href=\"/admin/tokens\">Tokens</a>",
        "<a href=\"/admin/audit\">Audit log</a>",
        "<a href=\"/admin/webhooks\">Webhooks</a>",
        "<a href=\"/admin/config\">Configuration</a>",
    ] {
        assert!(html.contains(link), "{link}: {html}");
    }
    let (_, html) = page(&app, &bob, "/access-requests").await;
    assert!(!html.contains("/admin/"), "{html}");
}

async fn the_audit_log_filters_pages_and_says_whether_the_chain_verifies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let approved = app.held("SELECT 'approved one'").await;
    app.approve("bob@x.com", &approved, Some("dba-team")).await;
    let rejected = app.held("SELECT 'rejected one'").await;
    app.reject("sam@x.com", &rejected, "no").await;
    let root = sign_in(&app, "root@x.com").await;

    let (status, html) = page(&app, &root, "/admin/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("The audit chain is intact: 6 events"),
        "{html}"
    );
    // Newest first.
    let newest = html.find("<td>6</td>").expect("event 6");
    let oldest = html.find("<td>1</td>").expect("event 1");
    assert!(newest < oldest, "{html}");

    let (_, html) = page(&app, &root, &format!("/admin/audit?request={approved}")).await;
    assert!(
        html.contains(&format!("/access-requests/{approved}")),
        "{html}"
    );
    assert!(
        !html.contains(&format!("/access-requests/{rejected}")),
        "{html}"
    );

    let (_, html) = page(&app, &root, "/admin/audit?actor=sam%40x.com").await;
    assert_eq!(html.matches("<tr><td>").count(), 1, "{html}");
    assert!(
        html.contains("<td>rejected</td><td>sam@x.com</td><td>api</td>"),
        "{html}"
    );
    assert!(
        html.contains("value=\"sam@x.com\""),
        "the form keeps the filter: {html}"
    );

    let (_, html) = page(&app, &root, "/admin/audit?kind=group_approved&actor=").await;
    assert_eq!(html.matches("<tr><td>").count(), 1, "{html}");
    assert!(
        html.contains("<td>group_approved</td><td>bob@x.com</td>"),
        "{html}"
    );

    let (status, _) = page(&app, &root, "/admin/audit?before=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // More than a page: a link to the older events, which keeps the filter.
    for n in 0..50 {
        app.held(&format!("SELECT {n}")).await;
    }
    let (_, html) = page(&app, &root, "/admin/audit?actor=alice%40x.com").await;
    assert_eq!(html.matches("<tr><td>").count(), 50, "{html}");
    let older = "/admin/audit?actor=alice%40x.com&amp;before=";
    let at = html.find(older).expect("a link to older events") + older.len();
    let before: String = html[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let (_, html) = page(
        &app,
        &root,
        &format!("/admin/audit?actor=alice%40x.com&before={before}"),
    )
    .await;
    // Alice's events: one `created` per request, 52 requests.
    assert_eq!(html.matches("<tr><td>").count(), 2, "{html}");
    assert!(!html.contains("Older events"), "{html}");

    // Someone rewrites who rejected: the page says where the chain breaks.
    tamper(
        &app.db.url,
        "update audit_event set actor = 'mallory@x.com' where seq = 6",
    )
    .await;
    let (status, html) = page(&app, &root, "/admin/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("The audit chain does not verify: event 6 was altered or forged"),
        "{html}"
    );
    assert!(!html.contains("is intact"), "{html}");
}

async fn the_webhooks_page_lists_deliveries_and_no_secret(backend: Backend) {
    let siem = crate::receiver::Receiver::start(crate::webhooks::SECRET).await;
    siem.plan(vec![crate::receiver::Reply::Status(503)]);
    // A token in the URL's query is a secret too.
    let url = format!("{}?token=query-secret-42", siem.url());
    let config = crate::webhooks::webhook("siem", &url, "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;
    let id = app.held("SELECT 1").await;
    crate::webhooks::drain(&app.delivery_worker()).await;
    let root = sign_in(&app, "root@x.com").await;

    let (status, html) = page(&app, &root, "/admin/webhooks").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<h2 id=\"webhook-siem\">siem</h2>"), "{html}");
    assert!(
        html.contains(&format!("<code>{}</code>", siem.url())),
        "{html}"
    );
    assert!(html.contains("access_request.*") || html.contains("access_request.created"));
    assert!(html.contains("1 pending, 0 delivered"), "{html}");
    let row = format!(
        "<code>{id}</code></a></td><td>access_request.created</td><td>pending</td><td>1</td>\
         <td>HTTP 503 Service Unavailable</td>"
    );
    assert!(html.contains(&row), "{html}");
    assert!(
        html.contains("next "),
        "a pending delivery's next attempt: {html}"
    );
    let secret = crate::webhooks::SECRET;
    for hidden in [
        secret,
        secret.trim_start_matches("whsec_"),
        "query-secret-42",
    ] {
        assert!(!html.contains(hidden), "{hidden} shown: {html}");
    }

    let (status, _) = page(&app, &root, "/admin/webhooks?name=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = page(&app, &root, "/admin/webhooks?name=siem&before=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn the_configuration_page_shows_no_secret(backend: Backend) {
    let db_password = "db-password-Zq81";
    let extra = format!(
        "{}\n[[connections]]\nname = \"warehouse\"\ntype = \"postgres\"\n\
         url = \"postgres://reader:{db_password}@warehouse.internal:5432/dw?password={db_password}\"\n",
        crate::webhooks::webhook("siem", "https://siem.example/in?key=hook-key-77", "")
    );
    let (_slack, app) = crate::slack::with_slack(backend, &extra).await;
    let root = sign_in(&app, "root@x.com").await;
    let (status, html) = page(&app, &root, "/admin/config").await;
    assert_eq!(status, StatusCode::OK);
    let text = html.replace("&quot;", "\"").replace("&amp;", "&");

    let secret = crate::webhooks::SECRET;
    for hidden in [
        AUDIT_KEY,
        secret,
        secret.trim_start_matches("whsec_"),
        crate::fake_slack::SIGNING_SECRET,
        crate::fake_slack::BOT_TOKEN,
        db_password,
        "hook-key-77",
        app.token("root@x.com"),
    ] {
        assert!(!text.contains(hidden), "{hidden} shown: {text}");
    }
    for masked in [
        "audit_key = \"••••••\"",
        "secret = \"••••••\"",
        "signing_secret = \"••••••\"",
        "bot_token = \"••••••\"",
        "url = \"postgres://reader:••••••@warehouse.internal:5432/dw?password=••••••\"",
        "url = \"https://siem.example/in?key=••••••\"",
    ] {
        assert!(text.contains(masked), "{masked}: {text}");
    }
    // What is not secret is there to read.
    assert!(text.contains("admin_group = \"admin\""), "{text}");
    assert!(
        text.contains("approval_groups = [\"dba-team\", \"security\"]"),
        "{text}"
    );
    assert!(
        text.contains("[[webhooks]]") && text.contains("[slack]"),
        "{text}"
    );
}

/// A multipart body as a browser sends the Run page's form: `fields`, then the file.
fn run_form(fields: &[(&str, &str)], file: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "----hoopbot-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let (filename, bytes) = match file {
        Some(bytes) => ("script.sql", bytes),
        // No file chosen: the browser still sends the field, nameless and empty.
        None => ("", &b""[..]),
    };
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"script\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    app: &TestApp,
    cookie: &str,
    fields: &[(&str, &str)],
    file: Option<&[u8]>,
) -> reqwest::Response {
    let (content_type, body) = run_form(fields, file);
    browser()
        .post(app.url("/run"))
        .header("cookie", cookie)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn a_script_uploaded_on_the_run_page_is_the_command_byte_for_byte(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = sign_in(&app, "alice@x.com").await;
    let (_, html) = page(&app, &alice, "/run").await;
    assert!(html.contains("enctype=\"multipart/form-data\""), "{html}");
    assert!(html.contains("type=\"file\""), "{html}");
    let csrf = csrf_in(&html);
    let nothing_made = || async {
        let listed = app.get("alice@x.com", "/api/v1/access-requests").await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 0);
    };
    let form = [
        ("csrf", csrf.as_str()),
        ("connection", "prod-db"),
        ("command", ""),
    ];

    // Without the session's CSRF token: refused, nothing made.
    let forged = [
        ("csrf", "forged"),
        ("connection", "prod-db"),
        ("command", ""),
    ];
    let reply = upload(&app, &alice, &forged, Some(b"DROP TABLE users;\n")).await;
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    nothing_made().await;

    // Not UTF-8: refused with why, nothing made.
    let reply = upload(&app, &alice, &form, Some(b"SELECT '\xff\xfe';\n")).await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    let html = reply.text().await.unwrap();
    assert!(
        html.contains("the uploaded file is not UTF-8 text"),
        "{html}"
    );
    nothing_made().await;

    // Typed and uploaded at once: which was meant is not guessed.
    let both = [
        ("csrf", csrf.as_str()),
        ("connection", "prod-db"),
        ("command", "SELECT 2"),
    ];
    let reply = upload(&app, &alice, &both, Some(b"SELECT 1;\n")).await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(
        reply
            .text()
            .await
            .unwrap()
            .contains("both a typed command and a file")
    );
    nothing_made().await;

    // Over the command limit, and over the body limit: 413, nothing made.
    let long = vec![b'x'; MAX_COMMAND_BYTES + 1];
    let reply = upload(&app, &alice, &form, Some(&long)).await;
    assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let huge = vec![b'x'; MAX_COMMAND_BYTES * 6 + 128 * 1024];
    let reply = upload(&app, &alice, &form, Some(&huge)).await;
    assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        reply
            .text()
            .await
            .unwrap()
            .contains("larger than this server accepts")
    );
    nothing_made().await;

    // The file as it is: a tab, a CRLF the file holds, non-ASCII text, the trailing newline.
    let script = "UPDATE t SET note = 'café ☕'\r\n\tWHERE id = 7;\n";
    let reply = upload(&app, &alice, &form, Some(script.as_bytes())).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let location = reply.headers()[LOCATION].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/access-requests/");
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["command"], script);
    assert_eq!(request.body["status"], "pending");

    // With no file chosen, the typed command goes as before, CRLF made LF.
    let typed = [
        ("csrf", csrf.as_str()),
        ("connection", "prod-db"),
        ("command", "SELECT 1\r\nFROM t"),
    ];
    let reply = upload(&app, &alice, &typed, None).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let location = reply.headers()[LOCATION].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/access-requests/");
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["command"], "SELECT 1\nFROM t");
}
