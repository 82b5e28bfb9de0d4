//! `hoop doctor`: checks each configured integration from where the server runs and says what
//! to fix. `hoop serve` runs the same checks at start and logs them, so a broken set-up shows up
//! before the first approver wonders where their card is.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::{Config, SlackConfig};
use crate::slack::web::{CallError, WebApi};
use crate::webhook::address::refusal;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    /// What was checked: "Slack bot token", "Slack channel C0123…".
    pub check: String,
    /// What was found, and for a failure what to do about it.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.check, self.detail)
    }
}

/// How long the public URL may take to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every check the config calls for.
pub async fn check(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    match &config.slack {
        None => findings.push(pass("Slack", "not configured ([slack] in the config)")),
        Some(slack) => findings.extend(check_slack(config, slack).await),
    }
    for lone in config.lone_approvers() {
        findings.push(fail(
            &format!("approval group {} of {}", lone.group, lone.connection),
            &lone.to_string(),
        ));
    }
    for hook in &config.webhooks {
        findings.push(pass(
            &format!("webhook {}", hook.name),
            &format!(
                "{} event type(s) to {}; `hoop webhooks test {}` sends a signed ping",
                hook.events.len(),
                hook.url.host_str().unwrap_or("?"),
                hook.name
            ),
        ));
    }
    findings
}

async fn check_slack(config: &Config, slack: &SlackConfig) -> Vec<Finding> {
    let mut findings = vec![pass(
        "Slack signing secret",
        "set (requests to /slack/… are checked against it)",
    )];
    let web = match WebApi::new(&slack.api_base_url, &slack.bot_token) {
        Ok(web) => web,
        Err(e) => {
            findings.push(fail("Slack client", &format!("cannot be set up: {e}")));
            return findings;
        }
    };
    match web.auth_test().await {
        Ok((team, bot)) => findings.push(pass(
            "Slack bot token",
            &format!("works: {bot} in workspace {team}"),
        )),
        Err(e) => {
            findings.push(fail(
                "Slack bot token",
                &format!(
                    "auth.test failed ({e}); copy the Bot User OAuth Token (xoxb-…) from the app's \
                     OAuth & Permissions page into slack.bot_token"
                ),
            ));
            // Every other Slack check needs the token.
            return findings;
        }
    }
    let mut channels: Vec<&str> = vec![slack.channel.as_str()];
    for conn in &config.connections {
        if let Some(channel) = conn.slack_channel.as_deref()
            && !channels.contains(&channel)
        {
            channels.push(channel);
        }
    }
    for channel in channels {
        findings.push(check_channel(&web, channel).await);
    }
    if let Some(app_token) = &slack.app_token {
        findings.push(match WebApi::new(&slack.api_base_url, app_token) {
            Ok(app) => match app.open_socket().await {
                Ok(()) => pass("Slack app token", "works: Socket Mode can connect"),
                Err(e) => fail(
                    "Slack app token",
                    &format!(
                        "apps.connections.open failed ({e}); create an app-level token with \
                         connections:write (Basic Information → App-Level Tokens) and enable \
                         Socket Mode"
                    ),
                ),
            },
            Err(e) => fail("Slack app token", &format!("cannot be set up: {e}")),
        });
    } else {
        findings.push(check_public_url(&config.server.public_url).await);
    }
    findings
}

async fn check_channel(web: &WebApi, channel: &str) -> Finding {
    let check = format!("Slack channel {channel}");
    match web.conversation_info(channel).await {
        Ok(info) if info["channel"]["is_archived"] == true => fail(
            &check,
            "is archived; unarchive it or configure another channel",
        ),
        Ok(info) if info["channel"]["is_member"] == false => fail(
            &check,
            &format!(
                "the bot is not in #{}; invite it there with /invite @hoopbot",
                info["channel"]["name"].as_str().unwrap_or(channel)
            ),
        ),
        Ok(info) => pass(
            &check,
            &format!(
                "the bot can post in #{}",
                info["channel"]["name"].as_str().unwrap_or(channel)
            ),
        ),
        Err(CallError::Refused { code }) if code == "channel_not_found" => fail(
            &check,
            "not found; use the channel's id (channel details → bottom), and for a private channel \
             invite the bot first",
        ),
        Err(e) => fail(&check, &format!("conversations.info failed: {e}")),
    }
}

/// Slack posts commands and clicks to `public_url`: it must be an https URL on a public address,
/// and answer. A loopback, private or plain-http URL may well answer here, yet Slack can never
/// reach it, so it fails without being asked.
async fn check_public_url(public_url: &str) -> Finding {
    let check = "public URL";
    let fix = format!(
        "Slack sends commands and clicks to {public_url}/slack/…, so set server.public_url (or \
         HOOP_PUBLIC_URL) to the https address Slack reaches this server at, or use Socket Mode \
         (slack.app_token)"
    );
    let problems = unreachable_from_slack(public_url).await;
    if !problems.is_empty() {
        return fail(check, &format!("{}; {fix}", problems.join("; ")));
    }
    let url = format!("{public_url}/healthz");
    let client = reqwest::Client::builder().timeout(REACH_TIMEOUT).build();
    let answer = match client {
        Ok(client) => client.get(&url).send().await,
        Err(e) => return fail(check, &format!("cannot check: {e}")),
    };
    match answer {
        Ok(reply) if reply.status().is_success() => pass(
            check,
            &format!(
                "{url} answers here; Slack's request URLs must be {public_url}/slack/commands \
                 and /slack/interactions, reachable from the internet"
            ),
        ),
        Ok(reply) => fail(
            check,
            &format!(
                "{url} answered {}; is server.public_url this server?",
                reply.status()
            ),
        ),
        Err(e) => fail(
            check,
            &format!(
                "{url} cannot be reached from here ({}); {fix}",
                one_line(&e)
            ),
        ),
    }
}

/// What keeps Slack from ever reaching `public_url`, whether or not it answers here: not https,
/// or a host that is (or resolves here only to) loopback, private or other non-public addresses,
/// as the webhook address guard classifies them. Empty when nothing does.
async fn unreachable_from_slack(public_url: &str) -> Vec<String> {
    let url = match reqwest::Url::parse(public_url) {
        Ok(url) => url,
        Err(e) => return vec![format!("{public_url} is not a URL ({e})")],
    };
    let mut problems = Vec::new();
    if url.scheme() != "https" {
        problems.push(format!(
            "it is {}://, and Slack calls only https URLs",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    // IPv6 literals come bracketed; IPv4 ones already normalised (0x7f.1 is 127.0.0.1).
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    let addresses: Vec<IpAddr> = match literal {
        Ok(ip) => vec![ip],
        Err(_) if host.is_empty() => {
            problems.push("it has no host".into());
            vec![]
        }
        // What it resolves to here; a name this machine cannot resolve is left to the request.
        Err(_) => tokio::net::lookup_host((host, 443))
            .await
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    let kinds: Vec<String> = addresses
        .iter()
        .filter_map(|&ip| refusal(ip).map(|kind| format!("{ip} ({kind})")))
        .collect();
    if !addresses.is_empty() && kinds.len() == addresses.len() {
        let at = if literal.is_ok() {
            format!("{host} is {}", kinds.join(", "))
        } else {
            format!("{host} resolves here only to {}", kinds.join(", "))
        };
        problems.push(format!("{at}, which Slack cannot reach from the internet"));
    }
    problems
}

fn one_line(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn pass(check: &str, detail: &str) -> Finding {
    Finding {
        ok: true,
        check: check.to_string(),
        detail: detail.to_string(),
    }
}

fn fail(check: &str, detail: &str) -> Finding {
    Finding {
        ok: false,
        check: check.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::check_public_url;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback, private or plain-http public URL fails, saying why, even when it answers here.
    #[tokio::test]
    async fn a_public_url_slack_cannot_reach_fails_and_says_why() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Something that answers /healthz on loopback, as a local `hoop serve` would.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                // The request's head first, then the answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let cases = [
            (
                format!("http://127.0.0.1:{port}"),
                vec!["127.0.0.1 is 127.0.0.1 (loopback)", "only https"],
            ),
            (
                format!("https://localhost:{port}"),
                vec!["localhost resolves here only to", "(loopback)"],
            ),
            (
                "https://10.1.2.3".to_string(),
                vec!["10.1.2.3 is 10.1.2.3 (private)"],
            ),
            ("https://[fd00::1]".to_string(), vec!["unique local"]),
            // A public address, but plain http: said without asking it anything.
            (
                "http://93.184.216.34".to_string(),
                vec!["http://, and Slack calls only https"],
            ),
        ];
        for (url, reasons) in cases {
            let finding = check_public_url(&url).await;
            assert!(!finding.ok, "{url}: {finding}");
            for reason in reasons {
                assert!(finding.detail.contains(reason), "{url}: {finding}");
            }
            assert!(finding.detail.contains("Socket Mode"), "{finding}");
        }
    }
}
