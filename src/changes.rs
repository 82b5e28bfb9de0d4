//! Wake-ups for whoever waits on a request (the `wait` endpoint), on new jobs (agents) or on
//! events to deliver (the delivery worker).
//!
//! Waiters sleep until told: the store publishes each change here after it commits; on Postgres a
//! listener relays other replicas' NOTIFYs; and one change poll per replica
//! (`store::ChangePoll`) reads, once a second, every change committed anywhere (another replica, another process on the SQLite file),
//! so a lost NOTIFY costs a second, never a wake-up. Waiters always re-read the database when
//! woken; nothing here is trusted for correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, watch};

use crate::domain::Status;

pub struct ChangeHub {
    requests: Mutex<HashMap<String, Weak<Notify>>>,
    jobs: Notify,
    /// Wakes this replica's delivery worker: every change has outbox entries to deliver.
    deliveries: Notify,
    /// Turns true when the server shuts down, so long polls answer at once instead of holding
    /// the shutdown up until they time out.
    closing: watch::Sender<bool>,
}

impl Default for ChangeHub {
    fn default() -> ChangeHub {
        ChangeHub {
            requests: Mutex::default(),
            jobs: Notify::new(),
            deliveries: Notify::new(),
            closing: watch::Sender::new(false),
        }
    }
}

/// A subscription to one request's changes; unsubscribes when dropped.
pub struct RequestWatch<'a> {
    hub: &'a ChangeHub,
    id: String,
    notify: Arc<Notify>,
}

impl ChangeHub {
    pub fn new() -> Arc<ChangeHub> {
        Arc::new(ChangeHub::default())
    }

    /// Subscribes to changes of request `id`.
    pub fn watch(&self, id: &str) -> RequestWatch<'_> {
        let mut requests = self.requests.lock().expect("change hub lock");
        let notify = match requests.get(id).and_then(Weak::upgrade) {
            Some(existing) => existing,
            None => {
                let fresh = Arc::new(Notify::new());
                requests.insert(id.to_string(), Arc::downgrade(&fresh));
                fresh
            }
        };
        RequestWatch {
            hub: self,
            id: id.to_string(),
            notify,
        }
    }

    /// Tells waiters that request `id` changed; `Approved` also wakes agents waiting for jobs.
    pub fn publish(&self, id: &str, status: Option<Status>) {
        let notify = self
            .requests
            .lock()
            .expect("change hub lock")
            .get(id)
            .and_then(Weak::upgrade);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
        if status == Some(Status::Approved) {
            self.jobs.notify_waiters();
        }
        // One worker, which may be busy: a stored permit wakes it once it looks again.
        self.deliveries.notify_one();
    }

    /// How many are waiting on request `id` right now.
    pub fn watchers(&self, id: &str) -> usize {
        let requests = self.requests.lock().expect("change hub lock");
        // The map's own reference is weak, so the strong count is the number of watchers.
        requests.get(id).map_or(0, Weak::strong_count)
    }

    /// Ends every long poll: the server is shutting down.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether [`ChangeHub::close`] has been called.
    pub fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Completes once [`ChangeHub::close`] has been called.
    pub async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closed| *closed).await;
    }

    /// Notified when any request becomes approved (a job for some agent).
    pub fn jobs(&self) -> &Notify {
        &self.jobs
    }

    /// Notified (once, with a stored permit) after any change: there is something to deliver.
    pub fn deliveries(&self) -> &Notify {
        &self.deliveries
    }
}

impl RequestWatch<'_> {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for RequestWatch<'_> {
    fn drop(&mut self) {
        let mut requests = self.hub.requests.lock().expect("change hub lock");
        // The map holds a weak reference, so a count of one means we are the last subscriber.
        // Both this check and `watch`'s upgrade happen under the lock, so they cannot interleave.
        if Arc::strong_count(&self.notify) == 1 {
            requests.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publish_wakes_an_enabled_waiter_and_the_last_drop_unsubscribes() {
        let hub = ChangeHub::new();
        let watch = hub.watch("r1");
        {
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            hub.publish("r1", Some(Status::Approved));
            tokio::time::timeout(std::time::Duration::from_secs(5), notified)
                .await
                .expect("woken");
        }
        let second = hub.watch("r1");
        assert_eq!(hub.watchers("r1"), 2);
        drop(watch);
        assert_eq!(hub.watchers("r1"), 1);
        drop(second);
        assert_eq!(hub.watchers("r1"), 0);
        assert!(hub.requests.lock().unwrap().is_empty());
    }
}
