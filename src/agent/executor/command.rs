//! `command` connections: runs the configured program with the approved text on its stdin.
//!
//! The text is never put into an argument or a shell string by us, so nothing in it is expanded
//! unless the configured program itself (say `bash`) chooses to interpret it.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::human;
use crate::config::ConnectionTarget;
use crate::domain::ExecutionResult;

/// `PATH` for programs whose connection does not set one.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// After the program exits, how long to keep reading output that background processes it left
/// behind may still be writing to the inherited pipes.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs `target.command` with `text` on its stdin and captures what it prints.
pub(super) async fn run(target: &ConnectionTarget, text: &str) -> ExecutionResult {
    let Some((program, args)) = target
        .command
        .as_deref()
        .and_then(|argv| argv.split_first())
    else {
        return failed("this connection has no `command` to run".into());
    };
    let mut child = match Command::new(program)
        .args(args)
        // The program gets only what its connection names, never the server's or agent's own
        // environment: that holds their tokens, database URL and audit key.
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&target.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill everything it started.
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot run {program}: {e}")),
    };
    // The pid doubles as the process group id (process_group(0)).
    let group = ProcessGroup(AtomicI32::new(
        child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0),
    ));
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return failed("cannot attach to the program's stdin, stdout and stderr".into());
    };

    let cap = target.max_output_bytes;
    let mut out = Captured::default();
    let mut err = Captured::default();
    let (status, error) = {
        // Feeding stdin and draining both pipes run alongside the wait, so a program that
        // writes a lot before reading all its input cannot deadlock against us.
        let io = async {
            tokio::join!(
                feed(stdin, text.as_bytes()),
                out.read_from(stdout, cap),
                err.read_from(stderr, cap),
            )
        };
        tokio::pin!(io);
        let wait = wait(&mut child, &group, target.statement_timeout);
        tokio::pin!(wait);
        let mut io_done = false;
        let waited = loop {
            tokio::select! {
                _ = &mut io, if !io_done => io_done = true,
                waited = &mut wait => break waited,
            }
        };
        group.disarm();
        if !io_done {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut io).await;
        }
        waited
    };
    ExecutionResult {
        exit_code: status.as_ref().and_then(exit_code),
        truncated: out.truncated || err.truncated,
        stdout: Some(String::from_utf8_lossy(&out.bytes).into_owned()),
        stderr: Some(String::from_utf8_lossy(&err.bytes).into_owned()),
        error,
        ..ExecutionResult::default()
    }
}

/// Waits for the program, killing its whole process group once `timeout` has passed. Returns
/// the exit status (if it could be had) and, for a timeout, the error.
async fn wait(
    child: &mut Child,
    group: &ProcessGroup,
    timeout: Option<Duration>,
) -> (Option<ExitStatus>, Option<String>) {
    let outcome = |waited: std::io::Result<ExitStatus>| match waited {
        Ok(status) => (Some(status), None),
        Err(e) => (None, Some(format!("cannot wait for the program: {e}"))),
    };
    let Some(timeout) = timeout else {
        return outcome(child.wait().await);
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(waited) => outcome(waited),
        Err(_) => {
            group.kill();
            // SIGKILL cannot be ignored, so reaping returns promptly.
            let status = child.wait().await.ok();
            let error = format!("command timed out after {}", human(timeout));
            (status, Some(error))
        }
    }
}

/// The exit code, or 128 + the signal number for a program killed by a signal, as shells report it.
fn exit_code(status: &ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

async fn feed(mut stdin: tokio::process::ChildStdin, text: &[u8]) {
    // A program that exits without reading all its input closes the pipe; that is its business.
    let _ = stdin.write_all(text).await;
    // Dropping stdin closes it, so the program sees end of input.
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    /// Reads to end of file, keeping the first `cap` bytes. The rest is read and dropped so the
    /// program never blocks on a full pipe.
    async fn read_from(&mut self, mut pipe: impl AsyncRead + Unpin, cap: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let keep = n.min(cap.saturating_sub(self.bytes.len()));
            self.bytes.extend_from_slice(&buf[..keep]);
            if keep < n {
                self.truncated = true;
            }
        }
    }
}

/// A running program's process group; killed if dropped before the program is done, e.g. when
/// the execution is cancelled. Holds 0 once there is nothing left to kill.
struct ProcessGroup(AtomicI32);

impl ProcessGroup {
    fn kill(&self) {
        let pgid = self.0.load(Ordering::Relaxed);
        if pgid > 0 {
            // SAFETY: killpg only sends a signal; the group is ours and still exists (its leader
            // has not been reaped).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    /// Called once the leader is reaped: its id may then be reused, so it must not be killed.
    fn disarm(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn failed(error: String) -> ExecutionResult {
    ExecutionResult {
        error: Some(error),
        ..ExecutionResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::execute;
    use crate::config::{ConnectionType, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_ROWS};

    fn program(argv: &[&str]) -> ConnectionTarget {
        ConnectionTarget {
            kind: ConnectionType::Command,
            url: None,
            command: Some(argv.iter().map(|a| a.to_string()).collect()),
            statement_timeout: None,
            max_rows: DEFAULT_MAX_ROWS,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            env: Default::default(),
        }
    }

    fn with_timeout(target: ConnectionTarget, seconds: u64) -> ConnectionTarget {
        ConnectionTarget {
            statement_timeout: Some(Duration::from_secs(seconds)),
            ..target
        }
    }

    /// Whether `pid` is gone (or a zombie waiting to be reaped) within 5 s: SIGKILL is
    /// delivered asynchronously.
    async fn dies(pid: i32) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                // The state follows the parenthesised command name.
                Ok(stat)
                    if stat
                        .rsplit_once(") ")
                        .is_some_and(|(_, s)| s.starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) if tokio::time::Instant::now() >= deadline => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    #[tokio::test]
    async fn stdout_stderr_and_exit_code_are_captured() {
        let result = execute(&program(&["bash"]), "echo out; echo err >&2; exit 3").await;
        assert_eq!(result.stdout.as_deref(), Some("out\n"));
        assert_eq!(result.stderr.as_deref(), Some("err\n"));
        assert_eq!(result.exit_code, Some(3));
        // A failing program is a result, not an execution error.
        assert_eq!(result.error, None);
        assert!(!result.truncated);
        assert!(result.results.is_empty());
        for time in [&result.started_at, &result.finished_at] {
            let time = time.as_deref().expect("a timestamp");
            assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
            // RFC 3339 in UTC with milliseconds: 2024-02-29T13:45:01.500Z
            assert_eq!(
                (time.len(), time.as_bytes()[19], time.ends_with('Z')),
                (24, b'.', true)
            );
        }

        let result = execute(&program(&["bash"]), "kill -TERM $$").await;
        assert_eq!(result.exit_code, Some(128 + libc::SIGTERM));
        assert_eq!(result.error, None);
    }

    #[tokio::test]
    async fn the_exact_text_reaches_stdin_unexpanded() {
        let text = "echo \"$(whoami)\" `id -u` 'it''s' $HOME \\n; rm -rf /nonexistent\n\
                    ünïcödé\n\tlast line without newline";
        let result = execute(&program(&["cat"]), text).await;
        assert_eq!(result.stdout.as_deref(), Some(text));
        assert_eq!(result.exit_code, Some(0));

        // The configured arguments are passed as they are, also without a shell.
        let result = execute(
            &program(&["bash", "-c", "cat; echo \"[$0]\"", "a b"]),
            "x\n",
        )
        .await;
        assert_eq!(result.stdout.as_deref(), Some("x\n[a b]\n"));
    }

    #[tokio::test]
    async fn the_program_sees_only_its_connections_environment() {
        // SAFETY: the variable name is unique to this test, so no other test reads or writes it.
        unsafe { std::env::set_var("HOOP_TEST_SERVER_SECRET", "hoop_0123456789") };
        let mut target = program(&["env"]);
        target.env = [("PGHOST".to_string(), "db.internal".to_string())].into();
        let result = execute(&target, "").await;
        let mut lines: Vec<&str> = result.stdout.as_deref().unwrap().lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                format!("PATH={DEFAULT_PATH}").as_str(),
                "PGHOST=db.internal"
            ]
        );

        // A connection may set its own PATH.
        target.env = [("PATH".to_string(), "/usr/bin".to_string())].into();
        let result = execute(&target, "").await;
        assert_eq!(result.stdout.as_deref(), Some("PATH=/usr/bin\n"));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        let result = execute(&program(&["/nonexistent/hoop-program"]), "anything").await;
        assert_eq!(
            result.error.as_deref(),
            Some("cannot run /nonexistent/hoop-program: No such file or directory (os error 2)")
        );
        assert_eq!((result.stdout, result.exit_code), (None, None));
        assert!(result.started_at.is_some() && result.finished_at.is_some());
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        // The background sleep holds the output pipe open too; only killing the group ends it.
        let script = "sleep 60 &\necho $!\nsleep 60\n";
        let result = execute(&with_timeout(program(&["bash"]), 1), script).await;
        assert_eq!(result.error.as_deref(), Some("command timed out after 1s"));
        assert_eq!(result.exit_code, Some(128 + libc::SIGKILL));
        let stdout = result.stdout.expect("the output before the timeout");
        let grandchild: i32 = stdout.trim().parse().expect("the background pid");
        assert!(
            dies(grandchild).await,
            "background process {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn cancelling_the_execution_kills_the_process_group() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pids = dir.path().join("pids");
        let script = format!("sleep 60 &\necho $$ $! > {}\nwait\n", pids.display());
        let target = program(&["bash"]);
        // Boxed, so that dropping it really drops the execution.
        let mut running = Box::pin(execute(&target, &script));
        // The script runs (polled alongside) until it has written both pids.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let written = loop {
            tokio::select! {
                _ = &mut running => panic!("the script should still be running"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            match std::fs::read_to_string(&pids) {
                Ok(text) if text.ends_with('\n') => break text,
                _ => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the script wrote no pids within 10 s"
                ),
            }
        };
        drop(running);
        for pid in written.split_whitespace() {
            let pid: i32 = pid.parse().expect("a pid");
            assert!(dies(pid).await, "process {pid} survived the cancellation");
        }
    }

    #[tokio::test]
    async fn output_is_capped_per_stream() {
        let capped = ConnectionTarget {
            max_output_bytes: 1000,
            ..program(&["bash"])
        };
        let result = execute(
            &capped,
            "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2",
        )
        .await;
        assert_eq!(result.stdout.as_deref(), Some("a".repeat(1000).as_str()));
        assert_eq!(result.stderr.as_deref(), Some("done\n"));
        assert!(result.truncated);
        assert_eq!(result.exit_code, Some(0));
    }

    #[tokio::test]
    async fn large_input_and_output_do_not_deadlock() {
        // Far beyond a pipe's buffer both ways: cat blocks writing unless we read as we write.
        let text = "0123456789abcdef\n".repeat(64 * 1024);
        let result = execute(&program(&["cat"]), &text).await;
        assert_eq!(result.stdout.as_deref(), Some(text.as_str()));

        // A program that never reads its input still finishes cleanly.
        let result = execute(&program(&["true"]), &text).await;
        assert_eq!((result.exit_code, result.error), (Some(0), None));
    }
}
