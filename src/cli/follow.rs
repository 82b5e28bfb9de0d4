//! Following a request from the terminal until it ends: the spinner while it waits, the result or
//! a clear message when it ends, Ctrl-C to withdraw it. Shared by `hoop exec` and `hoop requests wait`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::client::{Client, ClientError, ClientResult};
use crate::display::{self, single_line};
use crate::domain::{ExecutionResult, Status};
use crate::sentences;
use crate::view::{AccessRequestView, GroupViewStatus};

/// How the final request is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A psql-style table (or the program's own output)
    Table,
    /// The final access request as JSON, with its result
    Json,
}

/// `--raw` for commands that print another user's program output.
#[derive(clap::Args)]
pub struct RawArg {
    /// Print the program's output byte for byte, even on a terminal (where escape sequences and
    /// other invisible characters are otherwise shown as escapes)
    #[arg(long)]
    pub raw: bool,
}

/// The exit code for Ctrl-C, as shells report it.
const INTERRUPTED: u8 = 130;
const LONG_POLL: Duration = Duration::from_secs(25);
/// How long an approved command may wait for an agent before we suggest one may not be running.
const AGENT_HINT_AFTER: Duration = Duration::from_secs(15);
const FRAMES: [char; 8] = ['⣾', '⣽', '⣻', '⢿', '⡿', '⣟', '⣯', '⣷'];

/// Waits for `request` to end, showing progress, and prints the outcome.
/// `raw`: print the program's output byte for byte even on a terminal.
pub async fn follow(
    client: &Client,
    mut request: AccessRequestView,
    output: Output,
    raw: bool,
) -> anyhow::Result<ExitCode> {
    let mut status = StatusLine::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let retry = || crate::retry::backoff(Duration::from_secs(1), Duration::from_secs(30));
    let mut backoff = retry();
    // The whole story of a lost server is told once; later retries get a short line.
    let mut lost_contact = false;
    let mut approved_at = None;
    if status.terminal && request.status == Status::Pending {
        sayln!("Waiting for approval at {}", single_line(&request.url));
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut waiting = Box::pin(next_change(
        client,
        request.id.clone(),
        request.version,
        Duration::ZERO,
    ));
    loop {
        if request.status.is_terminal() {
            status.clear();
            return Ok(finish(&request, output, raw));
        }
        let waiting_for_agent = match (request.status, approved_at) {
            (Status::Approved, None) => {
                approved_at = Some(std::time::Instant::now());
                false
            }
            (Status::Approved, Some(since)) => since.elapsed() >= AGENT_HINT_AFTER,
            _ => false,
        };
        status.show(&progress(&request, waiting_for_agent, !status.terminal));
        tokio::select! {
            changed = &mut waiting => {
                let delay = match changed {
                    Ok(newer) => {
                        request = newer;
                        backoff = retry();
                        if std::mem::take(&mut lost_contact) {
                            status.clear();
                            sayln!("Back in contact with the server.");
                        }
                        Duration::ZERO
                    }
                    Err(e) if e.is_transient() => {
                        status.clear();
                        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                        if lost_contact {
                            sayln!("Still no answer; retrying in {}s.", delay.as_secs());
                        } else {
                            lost_contact = true;
                            sayln!(
                                "Lost contact with the server ({}); retrying in {}s. The request is still held; \
                                 resume any time with `hoop requests wait {}`.",
                                single_line(&e.to_string()),
                                delay.as_secs(),
                                single_line(&request.id)
                            );
                        }
                        delay
                    }
                    Err(e) => return Err(e.into()),
                };
                waiting = Box::pin(next_change(client, request.id.clone(), request.version, delay));
            }
            _ = ticker.tick() => status.tick(),
            _ = &mut ctrl_c => {
                status.clear();
                return interrupted(client, &request).await;
            }
        }
    }
}

async fn next_change(
    client: &Client,
    id: String,
    version: i64,
    delay: Duration,
) -> ClientResult<AccessRequestView> {
    tokio::time::sleep(delay).await;
    client.wait(&id, version, LONG_POLL).await
}

/// Ctrl-C: a pending request is withdrawn; one already approved runs anyway, and we say so.
async fn interrupted(client: &Client, request: &AccessRequestView) -> anyhow::Result<ExitCode> {
    if request.status == Status::Pending {
        match client.cancel(&request.id).await {
            Ok(_) => sayln!("Cancelled request {}.", single_line(&request.id)),
            Err(ClientError::Api { code, .. })
                if code == "already_decided" || code == "expired" =>
            {
                let now = client.get(&request.id).await?;
                sayln!(
                    "Too late to cancel: request {} is already {}. Follow it with `hoop requests wait {}`.",
                    request.id,
                    now.status,
                    request.id
                );
            }
            Err(e) => sayln!(
                "Could not cancel request {}: {}",
                single_line(&request.id),
                single_line(&e.to_string())
            ),
        }
    } else {
        sayln!(
            "Stopped waiting. Request {} is {} and cannot be withdrawn; see its result with `hoop requests wait {}`.",
            request.id,
            request.status,
            request.id
        );
    }
    Ok(ExitCode::from(INTERRUPTED))
}

/// What the spinner says while the request is not finished.
/// On a terminal the URL is printed once, on a line of its own, so the spinner line stays short
/// enough for the group progress; elsewhere every line carries it.
fn progress(request: &AccessRequestView, waiting_for_agent: bool, with_url: bool) -> String {
    if request.status == Status::Pending {
        let groups: Vec<String> = request
            .approval_groups
            .iter()
            .map(|g| match (&g.status, &g.decided_by) {
                (GroupViewStatus::Approved, Some(by)) => {
                    format!("{} ✓ {}", single_line(&g.group), single_line(by))
                }
                _ => format!("{} …", single_line(&g.group)),
            })
            .collect();
        let at = if with_url {
            format!(" at {}", single_line(&request.url))
        } else {
            String::new()
        };
        return format!(
            "{}{at}... {}",
            sentences::headline(Status::Pending),
            groups.join(" · ")
        );
    }
    if waiting_for_agent {
        return format!(
            "Approved, but no agent has picked it up yet: is an agent running for {}? Still waiting...",
            single_line(&request.connection)
        );
    }
    // The server's sentence for where it stands, as a progress line.
    format!("{}..", single_line(&request.summary))
}

/// Prints the final request and returns the exit code: 0 when it ran (or the program's own exit
/// code), 1 when it was rejected, expired, cancelled or failed. A program's output is another
/// user's text: on a terminal its escape sequences and invisible characters are shown as escapes,
/// unless `raw`; into a pipe or file it goes byte for byte.
pub fn finish(request: &AccessRequestView, output: Output, raw: bool) -> ExitCode {
    if output == Output::Json {
        let json = serde_json::to_string_pretty(request).expect("requests serialize");
        let exact = raw || !std::io::stdout().is_terminal();
        outln!("{}", if exact { json } else { json_visible(&json) });
    }
    let result = request.result.as_ref();
    // Reasons, names and errors come from other people and programs: each is shown on one line,
    // never obeyed.
    let failed = |message: String| {
        sayln!("{message}");
        ExitCode::FAILURE
    };
    let one = |text: &str| single_line(text);
    match request.status {
        Status::Executed => {
            let result = result.cloned().unwrap_or_default();
            if output == Output::Table {
                print_result(&result, raw);
            }
            match result.exit_code {
                Some(code) if code != 0 => {
                    ExitCode::from(u8::try_from(code.clamp(1, 255)).unwrap_or(1))
                }
                _ => ExitCode::SUCCESS,
            }
        }
        // Rejected, expired, cancelled or failed: the server's sentence says who and why.
        Status::Failed | Status::Rejected | Status::Expired | Status::Cancelled => {
            failed(one(&request.summary))
        }
        Status::Pending | Status::Approved | Status::Running => failed(format!(
            "Request {} is still {}.",
            one(&request.id),
            request.status
        )),
    }
}

/// The result as a table or the program's output: stdout and stderr each escaped when they go
/// to a terminal (title, cursor and colour sequences would act on it), exact otherwise.
fn print_result(result: &ExecutionResult, raw: bool) {
    let for_stdout = |text: &str| shown(text, raw || !std::io::stdout().is_terminal());
    let mut result = result.clone();
    result.stdout = result.stdout.as_deref().map(for_stdout);
    out!("{}", crate::table::render(&result));
    let _ = std::io::stdout().flush();
    if let Some(stderr) = result.stderr.as_deref().filter(|s| !s.is_empty()) {
        say!("{}", shown(stderr, raw || !std::io::stderr().is_terminal()));
    }
}

/// JSON for a terminal: hidden characters inside strings (serde escapes only the control ones)
/// written as `\uXXXX` escapes, so the JSON means the same and shows every character.
fn json_visible(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        // Outside strings JSON is ASCII, and its newlines and indentation are its layout.
        if c.is_ascii() || !display::is_hidden(c) {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{unit:04x}"));
        }
    }
    out
}

fn shown(text: &str, exact: bool) -> String {
    if exact {
        text.to_string()
    } else {
        display::visible(text)
    }
}

/// The one-line status on stderr: an animated spinner on a terminal, plain lines otherwise.
struct StatusLine {
    terminal: bool,
    frame: usize,
    message: String,
    shown: bool,
}

impl StatusLine {
    fn new() -> StatusLine {
        StatusLine {
            terminal: std::io::stderr().is_terminal(),
            frame: 0,
            message: String::new(),
            shown: false,
        }
    }

    fn show(&mut self, message: &str) {
        if message == self.message {
            return;
        }
        self.message = message.to_string();
        if self.terminal {
            self.draw();
        } else {
            sayln!("{message}");
        }
    }

    fn tick(&mut self) {
        if self.terminal && !self.message.is_empty() {
            self.frame = (self.frame + 1) % FRAMES.len();
            self.draw();
        }
    }

    fn draw(&mut self) {
        // A line wider than the terminal would wrap, and `\r` could then only redraw its last
        // row; cut it to fit instead.
        let message = fit(&self.message, terminal_width().saturating_sub(3));
        say!("\r\x1b[2K{} {message}", FRAMES[self.frame]);
        let _ = std::io::stderr().flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.terminal && self.shown {
            say!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.shown = false;
        }
        self.message.clear();
    }
}

/// The width of the terminal on stderr, or 80 when it cannot be told.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only fills in the winsize we pass; a failure leaves it zeroed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// The longest start of `text` that takes at most `columns` terminal columns (wide characters
/// take two).
fn fit(text: &str, columns: usize) -> String {
    let mut used = 0;
    text.chars()
        .take_while(|&c| {
            used += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            used <= columns
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::json_visible;

    #[test]
    fn a_status_line_is_cut_to_the_terminal_by_columns_not_characters() {
        assert_eq!(super::fit("approve prod-db", 7), "approve");
        // Each of these takes two columns: five columns hold two of them.
        assert_eq!(super::fit("日本語です", 5), "日本");
        assert_eq!(super::fit("short", 80), "short");
    }

    #[test]
    fn json_for_a_terminal_escapes_hidden_characters_and_means_the_same() {
        let value = serde_json::json!({"command": "x = 'admin\u{200b}' \u{202e}-- \u{E0041}\n\u{1b}[2K", "ok": "naïve 名前"});
        let json = serde_json::to_string_pretty(&value).unwrap();
        let shown = json_visible(&json);
        assert!(
            shown.contains(r#""x = 'admin\u200b' \u202e-- \udb40\udc41\n\u001b[2K""#),
            "{shown}"
        );
        assert!(shown.contains("naïve 名前"), "{shown}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            value
        );
    }
}
