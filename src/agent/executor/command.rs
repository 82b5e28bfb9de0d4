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

/// After the program exits, how long to keep reading output that background processes it left
/// behind may still be writing to the inherited pipes.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

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
    let waited = {
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
        // Exited or killed: from here on the group id may be reused, so it must not be killed.
        group.disarm();
        if !io_done {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut io).await;
        }
        waited
    };
    let (status, error) = match waited {
        Ok(status) => (Some(status), None),
        Err(error) => (None, Some(error)),
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

/// Waits for the program, killing its whole process group once `timeout` has passed.
async fn wait(
    child: &mut Child,
    group: &ProcessGroup,
    timeout: Option<Duration>,
) -> Result<ExitStatus, String> {
    let Some(timeout) = timeout else {
        return child.wait().await.map_err(|e| e.to_string());
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| e.to_string()),
        Err(_) => {
            group.kill();
            // Reap it; SIGKILL cannot be ignored, so this returns promptly.
            let _ = child.wait().await;
            Err(format!("command timed out after {}", human(timeout)))
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
}

impl ProcessGroup {
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
