//! What happened to a request, as outbox entries announce it and destinations subscribe to it.

use std::collections::BTreeSet;

/// One kind of change a request goes through, announced to every destination that wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    Created,
    /// Approved at once, without review (an admin's own request, an exempt group, …): follows
    /// `Created` for such a request.
    AutoApproved,
    /// One approval group approved; the request may still wait for others.
    GroupApproved,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Running,
    Executed,
    Failed,
}

impl Event {
    /// Every event, in the order of a request's life.
    pub const ALL: [Event; 10] = [
        Event::Created,
        Event::AutoApproved,
        Event::GroupApproved,
        Event::Approved,
        Event::Rejected,
        Event::Expired,
        Event::Cancelled,
        Event::Running,
        Event::Executed,
        Event::Failed,
    ];

    /// The event type as outbox entries, deliveries and subscriptions name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "access_request.created",
            Event::AutoApproved => "access_request.auto_approved",
            Event::GroupApproved => "access_request.group_approved",
            Event::Approved => "access_request.approved",
            Event::Rejected => "access_request.rejected",
            Event::Expired => "access_request.expired",
            Event::Cancelled => "access_request.cancelled",
            Event::Running => "access_request.running",
            Event::Executed => "access_request.executed",
            Event::Failed => "access_request.failed",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The events `patterns` subscribe to: exact types, or `access_request.*` (or `*`) for all.
    /// Unknown types are an error, so a typo never silently subscribes to nothing.
    pub fn subscribed(patterns: &[String]) -> Result<BTreeSet<Event>, String> {
        if patterns.is_empty() {
            return Err("subscribes to no events; list some, or \"access_request.*\"".into());
        }
        let mut events = BTreeSet::new();
        for pattern in patterns {
            match pattern.as_str() {
                "*" | "access_request.*" => events.extend(Event::ALL),
                exact => match Event::parse(exact) {
                    Some(event) => {
                        events.insert(event);
                    }
                    None => {
                        let known: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
                        return Err(format!(
                            "{exact:?} is not an event type; known: access_request.* or {}",
                            known.join(", ")
                        ));
                    }
                },
            }
        }
        Ok(events)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_named_once_and_read_back() {
        for event in Event::ALL {
            assert_eq!(Event::parse(event.as_str()), Some(event));
        }
        let names: BTreeSet<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names.len(), Event::ALL.len());
        assert_eq!(Event::parse("access_request.aproved"), None);
    }

    #[test]
    fn subscriptions_expand_wildcards_and_refuse_unknown_types() {
        let all = Event::subscribed(&["access_request.*".into()]).unwrap();
        assert_eq!(all.len(), Event::ALL.len());
        assert_eq!(Event::subscribed(&["*".into()]).unwrap(), all);
        let some = Event::subscribed(&[
            "access_request.rejected".into(),
            "access_request.approved".into(),
        ])
        .unwrap();
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            [Event::Approved, Event::Rejected]
        );
        let typo = Event::subscribed(&["access_request.aproved".into()]).unwrap_err();
        assert!(
            typo.contains("\"access_request.aproved\" is not an event type"),
            "{typo}"
        );
        assert!(Event::subscribed(&[]).is_err());
    }
}
