//! Slack as a kind of delivery destination: every change of a request becomes one delivery that
//! brings every Slack copy of its card up to that version — the channel card, a DM to each linked
//! approver, and the requester's outcome DM. Where each copy was posted is kept in
//! `posted_message`, so any replica, after any restart, updates every copy; a copy already showing
//! the delivery's version or a newer one is left alone, so an older state never overwrites a newer.
//!
//! One delivery may take several calls. Each copy's progress is saved as it is made, so a retry
//! (after a 429, a 500, a timeout) picks up where the last attempt stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::card::{self, Buttons, Message};
use super::surface::KIND;
use super::web::{CallError, WebApi};
use crate::config::{Config, SlackConfig};
use crate::delivery::{Answer, Notifier, Stopping, Verdict};
use crate::domain::{AccessRequest, AutoApproval, Clock, Event, Millis, Status, YouMay};
use crate::expiring::ExpiringMap;
use crate::service::Hoop;
use crate::store::{Delivery, PostedMessage, Route};

/// Slack is one destination: the workspace the bot token belongs to.
const DESTINATION: &str = "workspace";
/// The longest one attempt may take; past it the attempt stops and retries at once, so a claim's
/// lease (this plus margin) is never outlived.
const ATTEMPT_BUDGET: Duration = Duration::from_secs(45);
/// A channel whose next free slot is further off than this is retried later instead of waited for
/// (a retry is a failed attempt, with backoff). Waiting is cheap: a burst of cards to one channel
/// goes out a message a second without failures, up to this many seconds' worth.
const MAX_PACING_WAIT: Duration = Duration::from_secs(10);
/// Errors after which a copy can never be posted or updated (deleted message, archived or unknown
/// channel, a bot left outside the channel, a user who cannot be messaged): that copy is given
/// up, with the error in the attempt, and the other copies are still brought up to date.
/// `hoop doctor` finds the set-up ones.
const GONE: [&str; 9] = [
    "message_not_found",
    "channel_not_found",
    "is_archived",
    "cant_update_message",
    "not_in_channel",
    "user_not_found",
    "user_not_visible",
    "cannot_dm_bot",
    "user_disabled",
];

/// How long an approver's email that found no confirmed Slack user is not asked about again.
const UNMATCHED_EMAIL_FOR: Duration = Duration::from_secs(60 * 60);
/// Unmatched emails remembered at most; past that, the oldest are asked about again sooner.
const UNMATCHED_EMAILS: usize = 10_000;
/// Approvers' emails one attempt asks Slack about at most; the rest are asked by later ones.
const LOOKUPS_PER_ATTEMPT: usize = 20;

/// Posts and updates request cards in Slack.
pub struct SlackNotifier {
    /// Linked accounts and posted messages, through the service's use cases.
    hoop: Hoop,
    config: Arc<Config>,
    web: WebApi,
    pacer: Pacer,
    address_sha256: String,
    /// Emails Slack had no confirmed user for, until they may be asked about again.
    unmatched: Mutex<ExpiringMap<String, (), Millis>>,
}

/// One copy of a card, as `posted_message.destination` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Copy {
    /// The card in a channel.
    Channel(String),
    /// The card in an approver's DM (their Slack user id).
    Approver(String),
    /// The outcome in the requester's DM.
    Requester(String),
}

impl Copy {
    fn key(&self) -> String {
        match self {
            Copy::Channel(c) => format!("channel:{c}"),
            Copy::Approver(u) => format!("dm:{u}"),
            Copy::Requester(u) => format!("outcome:{u}"),
        }
    }

    fn parse(key: &str) -> Option<Copy> {
        let (kind, id) = key.split_once(':')?;
        Some(match kind {
            "channel" => Copy::Channel(id.into()),
            "dm" => Copy::Approver(id.into()),
            "outcome" => Copy::Requester(id.into()),
            _ => return None,
        })
    }
}

impl SlackNotifier {
    /// Slack's notifier when `[slack]` is configured.
    pub fn new(
        hoop: Hoop,
        config: Arc<Config>,
        clock: Clock,
    ) -> anyhow::Result<Option<SlackNotifier>> {
        let Some(slack) = config.slack.clone() else {
            return Ok(None);
        };
        let now = clock.clone();
        Ok(Some(SlackNotifier {
            web: WebApi::new(&slack.api_base_url, &slack.bot_token)?,
            unmatched: Mutex::new(ExpiringMap::with_clock(UNMATCHED_EMAILS, move || now.now())),
            pacer: Pacer::new(slack.message_interval, clock),
            address_sha256: hex::encode(Sha256::digest(slack.api_base_url.as_bytes())),
            hoop,
            config,
        }))
    }

    fn slack(&self) -> &SlackConfig {
        self.config
            .slack
            .as_ref()
            .expect("a Slack notifier exists only with [slack]")
    }

    /// Brings every copy of `request`'s card to its version, as far as `deadline` allows.
    /// Returns the copies given up on (see [`GONE`]), each with its error.
    async fn sync(
        &self,
        request: &AccessRequest,
        deadline: Instant,
        stopping: &Stopping,
    ) -> Result<Vec<String>, Failure> {
        // A request whose review was skipped (an admin's own, an exempt group's) has a card in
        // its channel only, so the run is seen where reviews are; it waits on nobody, so nobody
        // gets a DM. One nobody had to approve otherwise has no card.
        let skipped_review = request
            .auto_approval
            .as_ref()
            .is_some_and(AutoApproval::skipped_review);
        if request.approval_groups.is_empty() && !skipped_review {
            return Ok(Vec::new());
        }
        let url = crate::view::request_url(self.hoop.public_url(), &request.id);
        let posted = self
            .hoop
            .posted_messages(KIND, &request.id)
            .await
            .map_err(Failure::store)?;
        if self.slack().link_by_email && request.status == Status::Pending {
            self.link_approvers_by_email(request).await?;
        }
        // Everyone the request concerns who has linked a Slack account, in one query.
        let linked = self.linked_people(request).await?;
        let mut wanted: Vec<Copy> = Vec::new();
        if let Some(channel) = self.config.slack_channel(&request.connection) {
            wanted.push(Copy::Channel(channel.to_string()));
        }
        // Approvers are DM'd while their decision is wanted; later states update those DMs.
        if request.status == Status::Pending {
            for person in linked.iter().filter(|p| p.you_may.may_approve()) {
                wanted.push(Copy::Approver(person.account.clone()));
            }
        }
        // Once there is an outcome of a review, the requester hears it.
        if request.status != Status::Pending && !skipped_review {
            for person in linked.iter().filter(|p| p.is_requester) {
                wanted.push(Copy::Requester(person.account.clone()));
            }
        }
        // Copies posted earlier (in a channel the config no longer names, say) are updated too.
        for message in &posted {
            if let Some(copy) = Copy::parse(&message.destination)
                && !wanted.contains(&copy)
            {
                wanted.push(copy);
            }
        }
        // Each copy on its own: one that fails now does not keep the others from being updated.
        let mut outcome = Synced::default();
        for copy in wanted {
            if Instant::now() >= deadline {
                outcome.retry.get_or_insert(Failure::OutOfTime);
                break;
            }
            if stopping.is_set() {
                outcome.retry = Some(Failure::Stopping);
                break;
            }
            let earlier = posted.iter().find(|m| m.destination == copy.key());
            match self
                .bring_up_to_date(request, &url, &copy, earlier, &linked, stopping)
                .await
            {
                Ok(()) => {}
                Err(Failure::Call(CallError::Refused { code }))
                    if GONE.contains(&code.as_str()) =>
                {
                    tracing::warn!(request_id = %request.id, copy = copy.key(), code, "a Slack copy of a card cannot be posted or updated; given up");
                    self.give_up_copy(request, &copy, earlier, &code).await?;
                    outcome.gone.push(format!("{}: {code}", copy.key()));
                }
                Err(failure) => {
                    outcome.retry.get_or_insert(failure);
                }
            }
        }
        match outcome.retry {
            Some(failure) => Err(failure),
            None => Ok(outcome.gone),
        }
    }

    /// Records a copy that can never be posted or updated as done at this version, so later
    /// changes leave it alone.
    async fn give_up_copy(
        &self,
        request: &AccessRequest,
        copy: &Copy,
        earlier: Option<&PostedMessage>,
        code: &str,
    ) -> Result<(), Failure> {
        let mut external = earlier.map_or_else(|| serde_json::json!({}), |m| m.external.clone());
        external["gone"] = serde_json::json!(code);
        self.record(request, copy, earlier, external).await
    }

    /// Records where `copy` is and that it shows `request`'s version.
    async fn record(
        &self,
        request: &AccessRequest,
        copy: &Copy,
        earlier: Option<&PostedMessage>,
        external: serde_json::Value,
    ) -> Result<(), Failure> {
        let now = self.pacer.clock.now();
        self.hoop
            .record_posted(&PostedMessage {
                kind: KIND.to_string(),
                destination: copy.key(),
                request_id: request.id.clone(),
                external,
                version: request.version,
                posted_at: earlier.map_or(now, |m| m.posted_at),
                updated_at: now,
            })
            .await
            .map_err(Failure::store)
    }

    async fn bring_up_to_date(
        &self,
        request: &AccessRequest,
        url: &str,
        copy: &Copy,
        earlier: Option<&PostedMessage>,
        linked: &[Person],
        stopping: &Stopping,
    ) -> Result<(), Failure> {
        // Already at this version or newer, or given up on.
        if earlier.is_some_and(|m| m.version >= request.version || !m.external["gone"].is_null()) {
            return Ok(());
        }
        let message = message(request, url, copy, linked);
        let external = match earlier {
            Some(posted) => {
                let (Some(channel), Some(ts)) = (
                    posted.external["channel"].as_str(),
                    posted.external["ts"].as_str(),
                ) else {
                    return Ok(());
                };
                self.paced(channel, stopping).await?;
                self.web
                    .update(channel, ts, &message)
                    .await
                    .map_err(|e| self.failed(channel, e))?;
                posted.external.clone()
            }
            None => {
                let channel = match copy {
                    Copy::Channel(channel) => channel.clone(),
                    // Opening a DM is not a message to a channel: nothing to pace.
                    Copy::Approver(user) | Copy::Requester(user) => {
                        self.web.open_dm(user).await.map_err(Failure::Call)?
                    }
                };
                self.paced(&channel, stopping).await?;
                let (channel, ts) = self
                    .web
                    .post(&channel, &message)
                    .await
                    .map_err(|e| self.failed(&channel, e))?;
                serde_json::json!({ "channel": channel, "ts": ts })
            }
        };
        self.record(request, copy, earlier, external).await
    }

    /// With `link_by_email`: links each approver the request waits on who has no Slack account
    /// linked yet to the workspace's user with their email (`users.lookupByEmail`), when Slack
    /// says that user confirmed it — as `/hoop subscribe` would, audited as a link by email — so
    /// they get their DM and their clicks count without ever subscribing. An email with no such
    /// user is not asked about again for an hour; a failed call only leaves the DM for later.
    async fn link_approvers_by_email(&self, request: &AccessRequest) -> Result<(), Failure> {
        let unlinked = self
            .hoop
            .approvers_without_link(KIND, request)
            .await
            .map_err(Failure::store)?;
        let unasked = unlinked.iter().filter(|user| {
            let unmatched = self.unmatched.lock().expect("unmatched emails lock");
            unmatched.get(user.email.as_str()).is_none()
        });
        for user in unasked.take(LOOKUPS_PER_ATTEMPT) {
            let email = user.email.as_str();
            let found = match self.web.lookup_by_email(email).await {
                Ok(found) => found,
                Err(CallError::Refused { code }) if code == "users_not_found" => {
                    serde_json::Value::Null
                }
                Err(e) => {
                    tracing::info!(error = %e, "cannot look an approver up by email in Slack yet");
                    return Ok(());
                }
            };
            let account = &found["user"];
            let confirmed = account["is_email_confirmed"].as_bool() == Some(true)
                && account["profile"]["email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email));
            match account["id"].as_str() {
                // A Slack account already linked (by a code, to another user) keeps its link.
                Some(id)
                    if confirmed
                        && self
                            .hoop
                            .linked_identity(KIND, id)
                            .await
                            .map_err(Failure::store)?
                            .is_none() =>
                {
                    self.hoop
                        .link_verified_email(KIND, id, email)
                        .await
                        .map_err(Failure::store)?;
                }
                _ => {
                    let mut unmatched = self.unmatched.lock().expect("unmatched emails lock");
                    let until = unmatched.now() + UNMATCHED_EMAIL_FOR.as_millis() as Millis;
                    unmatched.insert(email.to_string(), (), until);
                }
            }
        }
        Ok(())
    }

    /// The linked Slack accounts of the request's possible approvers and its requester, with
    /// what each may do with it now: the one rule, on the service's clock.
    async fn linked_people(&self, request: &AccessRequest) -> Result<Vec<Person>, Failure> {
        let people = self
            .hoop
            .linked_people(KIND, request)
            .await
            .map_err(Failure::store)?;
        Ok(people
            .into_iter()
            .map(|person| Person {
                is_requester: person
                    .identity
                    .email
                    .as_str()
                    .eq_ignore_ascii_case(&request.requester),
                account: person.account,
                you_may: person.you_may,
            })
            .collect())
    }

    /// Waits for `channel`'s next slot, unless this replica stops meanwhile.
    async fn paced(&self, channel: &str, stopping: &Stopping) -> Result<(), Failure> {
        tokio::select! {
            slot = self.pacer.slot(channel) => Ok(slot?),
            _ = stopping.set() => Err(Failure::Stopping),
        }
    }

    /// A failed call; a 429 also holds back the channel's other messages.
    fn failed(&self, channel: &str, error: CallError) -> Failure {
        if let CallError::RateLimited {
            retry_after: Some(after),
        } = &error
        {
            self.pacer.hold(channel, *after);
        }
        Failure::Call(error)
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn destinations(&self) -> Vec<String> {
        vec![DESTINATION.to_string()]
    }

    fn routes(&self, _event: Event) -> Vec<Route> {
        vec![Route {
            kind: KIND,
            destination: DESTINATION.to_string(),
            address_sha256: self.address_sha256.clone(),
            give_up_after: self.slack().give_up_after.as_millis() as Millis,
        }]
    }

    fn address_sha256(&self, destination: &str) -> Option<String> {
        (destination == DESTINATION).then(|| self.address_sha256.clone())
    }

    fn longest_attempt(&self) -> Duration {
        ATTEMPT_BUDGET + Duration::from_secs(15)
    }

    async fn deliver(&self, delivery: &Delivery, stopping: &Stopping) -> Answer {
        let request = match delivery.request() {
            Ok(request) => request,
            // Retrying would read the same snapshot again.
            Err(error) => {
                return Answer {
                    status: None,
                    error: Some(error),
                    verdict: Verdict::GiveUp,
                };
            }
        };
        match self
            .sync(&request, Instant::now() + ATTEMPT_BUDGET, stopping)
            .await
        {
            Ok(gone) => Answer {
                status: Some(200),
                // Copies given up on are said in the attempt, for `hoop requests show`.
                error: (!gone.is_empty()).then(|| format!("given up: {}", gone.join(", "))),
                verdict: Verdict::Delivered,
            },
            Err(Failure::Stopping) => Answer {
                status: None,
                error: Some(Failure::Stopping.to_string()),
                verdict: Verdict::Stopped,
            },
            Err(failure) => {
                tracing::info!(request_id = %request.id, version = request.version, error = %failure, "Slack card not yet up to date");
                Answer {
                    status: failure.status(),
                    error: Some(failure.to_string()),
                    verdict: Verdict::Retry {
                        after: failure.retry_after(),
                    },
                }
            }
        }
    }
}

/// Someone the request concerns, with a linked Slack account.
struct Person {
    account: String,
    /// What they may do with the request now; never anything for its requester, who gets only
    /// the outcome.
    you_may: YouMay,
    is_requester: bool,
}

/// The message a copy shows of `request` now.
fn message(request: &AccessRequest, url: &str, copy: &Copy, linked: &[Person]) -> Message {
    match copy {
        Copy::Channel(_) => card::request_card(request, url, Buttons::Pending),
        Copy::Approver(account) => {
            // Only the groups the rule lets them approve now; someone no longer linked (or
            // configured) keeps a copy without approve buttons.
            let none = Vec::new();
            let groups = linked
                .iter()
                .find(|p| &p.account == account)
                .map_or(&none, |p| &p.you_may.approve_as);
            card::request_card(request, url, Buttons::Groups(groups))
        }
        Copy::Requester(_) => card::outcome_message(request, url),
    }
}

/// How an attempt went for each copy: the ones given up on, and the first failure to retry for.
#[derive(Default)]
struct Synced {
    gone: Vec<String>,
    retry: Option<Failure>,
}

/// Why a card is not yet up to date everywhere.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Call(CallError),
    /// The channel's pace allows the next message only this much later.
    #[error("paced: the channel's next message is due in {} ms", .0.as_millis())]
    Paced(Duration),
    #[error("the attempt ran out of time; the rest follows with the next attempt")]
    OutOfTime,
    #[error("this replica is stopping; the rest follows with the next attempt")]
    Stopping,
    #[error("database: {0}")]
    Store(String),
}

impl Failure {
    fn store(e: crate::error::Error) -> Failure {
        Failure::Store(e.to_string())
    }

    fn status(&self) -> Option<i64> {
        match self {
            Failure::Call(e) => e.status(),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Call(CallError::RateLimited { retry_after }) => *retry_after,
            Failure::Paced(after) => Some(*after),
            Failure::OutOfTime => Some(Duration::ZERO),
            _ => None,
        }
    }
}

impl From<Duration> for Failure {
    fn from(wait: Duration) -> Failure {
        Failure::Paced(wait)
    }
}

/// Channels whose pace is remembered at most; past that, the free ones are forgotten.
const PACED_CHANNELS: usize = 10_000;

/// Spaces messages to one channel `interval` apart (Slack allows about one a second per channel),
/// within this replica. Times are the service's clock, the one deliveries are scheduled by.
struct Pacer {
    interval: Millis,
    clock: Clock,
    /// Channel → when it may next be posted to; forgotten once that time has come.
    next: Mutex<ExpiringMap<String, Millis, Millis>>,
}

impl Pacer {
    fn new(interval: Duration, clock: Clock) -> Pacer {
        let now = clock.clone();
        Pacer {
            interval: interval.as_millis() as Millis,
            clock,
            next: Mutex::new(ExpiringMap::with_clock(PACED_CHANNELS, move || now.now())),
        }
    }

    /// Waits for `channel`'s next slot and takes it; when that is more than [`MAX_PACING_WAIT`]
    /// off, takes nothing and says how long to wait instead.
    async fn slot(&self, channel: &str) -> Result<(), Duration> {
        let wait = {
            let mut next = self.next.lock().expect("pacer lock");
            let now = next.now();
            let at = next.get(channel).copied().unwrap_or(now);
            let wait = Duration::from_millis((at - now) as u64);
            if wait > MAX_PACING_WAIT {
                return Err(wait);
            }
            let after = at + self.interval;
            next.insert(channel.to_string(), after, after);
            wait
        };
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Sends nothing more to `channel` for `after` (Slack's Retry-After).
    fn hold(&self, channel: &str, after: Duration) {
        let mut next = self.next.lock().expect("pacer lock");
        let until = next.now() + after.as_millis() as Millis;
        let at = next.get(channel).map_or(until, |at| (*at).max(until));
        next.insert(channel.to_string(), at, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_channel_gets_one_message_per_interval_and_a_busy_one_says_when() {
        let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let pacer = Pacer::new(Duration::from_secs(1), Clock::shifted(offset.clone()));
        pacer.slot("C1").await.unwrap();
        let start = tokio::time::Instant::now();
        // The second message to C1 waits for the interval. The pacer reads the real clock
        // (shifted), so the real milliseconds between the two calls, many on a busy machine,
        // come off the wait; tokio's paused time is what the wait itself took.
        let interval = |waited: Duration| {
            waited <= Duration::from_secs(1) && waited > Duration::from_millis(900)
        };
        pacer.slot("C1").await.unwrap();
        let waited = tokio::time::Instant::now() - start;
        assert!(interval(waited), "{waited:?}");
        // Another channel is not held up by the first.
        pacer.slot("C2").await.unwrap();
        assert_eq!(tokio::time::Instant::now() - start, waited);
        // After a 429 with Retry-After: 30, the channel is refused with the time left, until the
        // clock has moved past it.
        pacer.hold("C1", Duration::from_secs(30));
        let wait = pacer.slot("C1").await.unwrap_err();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        offset.fetch_add(31_000, std::sync::atomic::Ordering::Relaxed);
        pacer.slot("C1").await.unwrap();
    }

    #[test]
    fn copies_are_named_so_they_can_be_found_again() {
        for copy in [
            Copy::Channel("C0123".into()),
            Copy::Approver("U1".into()),
            Copy::Requester("U2".into()),
        ] {
            assert_eq!(Copy::parse(&copy.key()), Some(copy));
        }
        assert_eq!(Copy::parse("nonsense"), None);
    }
}
