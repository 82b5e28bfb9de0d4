//! Group commit: every request write (a submission, a decision, a job's progress), and every
//! sighting of a chat request's signature, goes through one writer task per store, which commits
//! whatever has queued up since its last commit in one transaction and only then answers each
//! caller.
//!
//! Many callers' changes then share one transaction, one lock on the audit chain's head and one
//! flush to disk, instead of queueing one after another on SQLite's single write lock or on the
//! chain's head row. Nothing is acknowledged before it is durable: a caller hears `Ok` only after
//! the commit that holds its change. If the database refuses a group, each of its writes is tried
//! again in a transaction of its own, so one bad write fails only its own caller; if it cannot be
//! reached, the whole group fails at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{
    AuditEntry, Change, Decide, NewRequest, OutboxEntry, Sighting, StoreError, StoreResult,
};
use crate::domain::AccessRequest;

/// Writes one group commit takes at most; the rest wait for the next.
pub(super) const MAX_GROUP: usize = 256;
/// How long the writer waits at most for more writes before committing a group smaller than the
/// last one. It blocks only the writer's own thread.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

/// What a caller hears of its write: for a [`Write::Decide`], the request as the group read it
/// (`None`: there is no such request).
pub(super) type Outcome = StoreResult<Option<AccessRequest>>;

/// One write for the next group commit.
pub(super) enum Write {
    /// A new request with its first audit events and outbox entries.
    Insert {
        new: Box<NewRequest>,
        audit: Vec<AuditEntry>,
        outbox: Vec<OutboxEntry>,
    },
    /// A compare-and-set on a request; [`StoreError::Conflict`] when it lost.
    Apply(Box<Change>),
    /// A request read in the group's transaction, and the compare-and-set `decide` makes of it;
    /// [`StoreError::Conflict`] when another replica changed the request first. With `once`, a
    /// signature's SHA-256 that must be seen for the first time, and is recorded with it;
    /// [`StoreError::Replayed`] (and no change) when it was seen before.
    Decide {
        request_id: String,
        decide: Decide,
        once: Option<Sighting>,
    },
    /// A chat request's signature seen; [`StoreError::Conflict`] when it was seen before (see
    /// `signatures.rs`).
    Sighting(Sighting),
}

impl Write {
    /// The request or subject the write is about.
    pub(super) fn subject(&self) -> &str {
        match self {
            Write::Insert { new, .. } => &new.id,
            Write::Apply(change) => &change.request_id,
            Write::Decide { request_id, .. } => request_id,
            Write::Sighting(sighting) => &sighting.sha256,
        }
    }
}

/// The backend's half: commits a group of writes in one transaction.
#[async_trait::async_trait]
pub(super) trait Committer: Send + 'static {
    /// Commits `writes` in one transaction and then tells waiters (this replica's and the
    /// others') about what changed. `Err` when the transaction failed and nothing of it is
    /// stored; otherwise one outcome per write, in order, [`StoreError::Conflict`] for a
    /// compare-and-set that lost (and wrote nothing).
    async fn commit(&mut self, writes: &[Write]) -> StoreResult<Vec<Outcome>>;
}

/// The callers' half: queues writes for the writer task and waits for their commit.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Queued>,
    /// Writes queued or being committed: how far behind the writer is.
    waiting: Arc<AtomicUsize>,
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Outcome>,
}

impl GroupCommit {
    /// Starts the writer that commits with `committer`, on a thread of its own. It ends when the
    /// last [`GroupCommit`] handle is dropped, after committing what was queued.
    pub(super) fn start(committer: impl Committer) -> GroupCommit {
        let (queue, queued) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let answered = waiting.clone();
        // A thread of its own: on the server's runtime, each of the writer's statements would
        // wait behind every request being served before the writer could send the next one, and
        // a group commit would take as long as a round of the whole server.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the store's writer");
        std::thread::Builder::new()
            .name("hoop-writer".into())
            .spawn(move || runtime.block_on(run(committer, queued, answered)))
            .expect("a thread for the store's writer");
        GroupCommit { queue, waiting }
    }

    /// How many writes are queued or being committed now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether the writer has stopped: it ends only when its store is dropped, so a store whose
    /// writer stopped is not fit to serve.
    pub(super) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Queues `write` and returns once it is committed (or has failed).
    pub(super) async fn write(&self, write: Write) -> Outcome {
        let (done, committed) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(Queued { write, done }).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Closed);
        }
        committed.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(
    mut committer: impl Committer,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    answered: Arc<AtomicUsize>,
) {
    let mut waiting: Vec<Queued> = Vec::new();
    let mut last_group = 0;
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(queued) => waiting.push(queued),
                None => return,
            }
        }
        take_queued(&mut queue, &mut waiting);
        // While writes keep arriving together, a moment's wait lets more of them share this
        // commit: each group costs the same few statements however many writes it holds. It
        // waits for as many as the last group held, a millisecond at most; a lone writer never
        // waits. (Postgres's `commit_delay` does the same for its WAL flush.)
        let deadline = std::time::Instant::now() + COMMIT_DELAY;
        while last_group > 1 && waiting.len() < last_group && std::time::Instant::now() < deadline {
            std::thread::sleep(COMMIT_DELAY / 10);
            take_queued(&mut queue, &mut waiting);
        }
        let (group, later) = one_per_subject(waiting);
        last_group = group.len();
        waiting = later;

        let (writes, callers): (Vec<Write>, Vec<_>) =
            group.into_iter().map(|q| (q.write, q.done)).unzip();
        let outcomes = match committer.commit(&writes).await {
            Ok(outcomes) => outcomes,
            Err(e) if writes.len() == 1 => vec![Err(e)],
            // Unreachable or broken, the database fails every write alike: no use trying each.
            Err(e) if !e.is_refusal() => {
                let message = e.to_string();
                writes
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(message.clone())))
                    .collect()
            }
            Err(e) => {
                // One write may have failed the whole group: each alone, so only it fails.
                tracing::warn!(error = %e, writes = writes.len(), "a group commit failed; committing its writes one by one");
                let mut outcomes = Vec::with_capacity(writes.len());
                for write in &writes {
                    outcomes.push(match committer.commit(std::slice::from_ref(write)).await {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                        Err(e) => Err(e),
                    });
                }
                outcomes
            }
        };
        for (caller, outcome) in callers.into_iter().zip(outcomes) {
            // Counted out before the caller hears, so a caller never sees its own write waiting.
            answered.fetch_sub(1, Ordering::SeqCst);
            // A caller that stopped waiting (its client went away) still has its write committed.
            let _ = caller.send(outcome);
        }
    }
}

/// Adds what has been queued meanwhile to `waiting`, up to a group's worth.
fn take_queued(queue: &mut mpsc::UnboundedReceiver<Queued>, waiting: &mut Vec<Queued>) {
    while waiting.len() < MAX_GROUP {
        match queue.try_recv() {
            Ok(queued) => waiting.push(queued),
            Err(_) => break,
        }
    }
}

/// Splits `waiting` into a group with at most one write per request, oldest first, and the
/// writes that must wait for the next group: two compare-and-sets on one request in one
/// transaction would both have read the same version, and the second must see the first's.
fn one_per_subject(waiting: Vec<Queued>) -> (Vec<Queued>, Vec<Queued>) {
    let mut seen = std::collections::HashSet::with_capacity(waiting.len());
    let mut group = Vec::with_capacity(waiting.len());
    let mut later = Vec::new();
    for queued in waiting {
        if seen.insert(queued.write.subject().to_string()) {
            group.push(queued);
        } else {
            later.push(queued);
        }
    }
    (group, later)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;

    /// A committer without a database: it reports the subjects of each group it is asked to
    /// commit, holds its first commit until the test releases it (so the writes queued
    /// meanwhile wait together for the next group), and fails a group as `fail` says.
    struct Fake {
        groups: mpsc::UnboundedSender<Vec<String>>,
        hold: Option<oneshot::Receiver<()>>,
        fail: fn(&[String]) -> Option<StoreError>,
    }

    #[async_trait::async_trait]
    impl Committer for Fake {
        async fn commit(&mut self, writes: &[Write]) -> StoreResult<Vec<Outcome>> {
            let subjects: Vec<String> = writes.iter().map(|w| w.subject().to_string()).collect();
            self.groups
                .send(subjects.clone())
                .expect("the test listens");
            if let Some(hold) = self.hold.take() {
                hold.await.expect("the test releases the first commit");
            }
            match (self.fail)(&subjects) {
                Some(e) => Err(e),
                None => Ok(writes.iter().map(|_| Ok(None)).collect()),
            }
        }
    }

    /// A writer on a [`Fake`] whose first commit is held until `release` is sent.
    struct Harness {
        writes: GroupCommit,
        groups: mpsc::UnboundedReceiver<Vec<String>>,
        release: oneshot::Sender<()>,
    }

    fn start(fail: fn(&[String]) -> Option<StoreError>) -> Harness {
        let (groups, groups_rx) = mpsc::unbounded_channel();
        let (release, hold) = oneshot::channel();
        let writes = GroupCommit::start(Fake {
            groups,
            hold: Some(hold),
            fail,
        });
        Harness {
            writes,
            groups: groups_rx,
            release,
        }
    }

    fn write(subject: &str) -> Write {
        Write::Decide {
            request_id: subject.into(),
            decide: Box::new(|_| None),
            once: None,
        }
    }

    type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// Queues `write` (its first poll sends it to the writer) and returns the wait for its outcome.
    async fn queue(writes: &GroupCommit, write: Write) -> Pending {
        let writes = writes.clone();
        let mut pending: Pending = Box::pin(async move { writes.write(write).await });
        std::future::poll_fn(|cx| {
            assert!(
                pending.as_mut().poll(cx).is_pending(),
                "answered before its commit"
            );
            Poll::Ready(())
        })
        .await;
        pending
    }

    /// Queues `first` and waits until the writer holds it in its (held) commit, then queues
    /// `rest`, which all wait for the next group.
    async fn queue_behind_held(
        harness: &mut Harness,
        first: &str,
        rest: &[&str],
    ) -> (Pending, Vec<Pending>) {
        let held = queue(&harness.writes, write(first)).await;
        assert_eq!(harness.groups.recv().await.unwrap(), [first]);
        let mut later = Vec::new();
        for subject in rest {
            later.push(queue(&harness.writes, write(subject)).await);
        }
        (held, later)
    }

    fn never(_: &[String]) -> Option<StoreError> {
        None
    }

    #[tokio::test]
    async fn writes_queued_together_are_committed_as_one_group() {
        let mut harness = start(never);
        let (held, later) = queue_behind_held(&mut harness, "held", &["a", "b", "c"]).await;
        // The held write and the three behind it: how far behind the writer is.
        assert_eq!(harness.writes.waiting(), 4);
        harness.release.send(()).unwrap();
        assert_eq!(harness.groups.recv().await.unwrap(), ["a", "b", "c"]);
        assert!(held.await.is_ok());
        for pending in later {
            assert!(matches!(pending.await, Ok(None)));
        }
        // Each write counts as waiting until its caller is answered.
        assert_eq!(harness.writes.waiting(), 0);
    }

    #[tokio::test]
    async fn a_second_write_to_the_same_subject_waits_for_the_next_group() {
        let mut harness = start(never);
        let (held, later) = queue_behind_held(&mut harness, "held", &["a", "b", "a", "c"]).await;
        harness.release.send(()).unwrap();
        assert_eq!(harness.groups.recv().await.unwrap(), ["a", "b", "c"]);
        assert_eq!(harness.groups.recv().await.unwrap(), ["a"]);
        assert!(held.await.is_ok());
        for pending in later {
            assert!(matches!(pending.await, Ok(None)));
        }
    }

    #[tokio::test]
    async fn a_refused_group_is_retried_write_by_write_so_only_the_bad_write_fails() {
        let mut harness = start(|subjects| {
            subjects
                .iter()
                .any(|s| s == "bad")
                .then(|| StoreError::Corrupt("refused".into()))
        });
        let (held, later) = queue_behind_held(&mut harness, "held", &["a", "bad", "b"]).await;
        harness.release.send(()).unwrap();
        assert_eq!(harness.groups.recv().await.unwrap(), ["a", "bad", "b"]);
        for alone in ["a", "bad", "b"] {
            assert_eq!(harness.groups.recv().await.unwrap(), [alone]);
        }
        assert!(held.await.is_ok());
        let outcomes: Vec<Outcome> = futures_util::future::join_all(later).await;
        assert!(
            matches!(
                outcomes[..],
                [Ok(None), Err(StoreError::Corrupt(_)), Ok(None)]
            ),
            "{outcomes:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_every_caller_of_the_group() {
        let mut harness = start(|subjects| {
            (subjects != ["held"]).then(|| {
                StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )))
            })
        });
        let (held, later) = queue_behind_held(&mut harness, "held", &["a", "b", "c"]).await;
        harness.release.send(()).unwrap();
        assert_eq!(harness.groups.recv().await.unwrap(), ["a", "b", "c"]);
        assert!(held.await.is_ok());
        for pending in later {
            let outcome = pending.await;
            assert!(
                matches!(&outcome, Err(StoreError::Unavailable(e)) if e.contains("connection refused")),
                "{outcome:?}"
            );
        }
        // Not retried write by write: the next thing the writer commits is a new write.
        let next = queue(&harness.writes, write("d")).await;
        assert_eq!(harness.groups.recv().await.unwrap(), ["d"]);
        assert!(matches!(next.await, Err(StoreError::Database(_))));
    }
}
