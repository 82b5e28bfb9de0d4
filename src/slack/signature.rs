//! Slack's request signatures (v0): every request Slack sends carries `X-Slack-Request-Timestamp`
//! (unix seconds) and `X-Slack-Signature: v0=<hex>`, the HMAC-SHA256 of `v0:{timestamp}:{raw
//! body}` keyed with the app's signing secret as text. A request is trusted only if the signature
//! matches (compared in constant time) and the timestamp is within five minutes of now either
//! way, so a captured request cannot be replayed later.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way, in seconds.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a request is not trusted. Said to the log, never to the sender beyond "401".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A header is missing.
    Missing(&'static str),
    /// The timestamp is not a number, or the signature not `v0=` and 64 hex digits.
    Malformed(&'static str),
    /// The timestamp is more than [`TOLERANCE_SECONDS`] from now; by how many seconds.
    Stale(i64),
    /// The signature does not match the body.
    Mismatch,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Missing(header) => write!(f, "no {header} header"),
            Refused::Malformed(header) => write!(f, "malformed {header} header"),
            Refused::Stale(seconds) => write!(
                f,
                "timestamp {seconds} s from now (at most {TOLERANCE_SECONDS} s allowed)"
            ),
            Refused::Mismatch => write!(f, "the signature does not match the body"),
        }
    }
}

/// Checks the `timestamp` and `signature` headers Slack sent with `body`, at `now` (unix
/// seconds), against `signing_secret`.
pub fn verify(
    signing_secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Refused> {
    const TIMESTAMP: &str = "X-Slack-Request-Timestamp";
    const SIGNATURE: &str = "X-Slack-Signature";
    let timestamp = timestamp.ok_or(Refused::Missing(TIMESTAMP))?;
    let signature = signature.ok_or(Refused::Missing(SIGNATURE))?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| Refused::Malformed(TIMESTAMP))?;
    let skew = now.saturating_sub(seconds);
    if skew.unsigned_abs() > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(Refused::Stale(skew));
    }
    let presented = signature
        .strip_prefix("v0=")
        .filter(|hex| hex.len() == 64)
        .and_then(|digits| hex::decode(digits).ok())
        .ok_or(Refused::Malformed(SIGNATURE))?;
    mac(signing_secret, timestamp, body)
        .verify_slice(&presented)
        .map_err(|_| Refused::Mismatch)
}

/// `v0=<hex>` for `body` sent at `timestamp`: what Slack would send (for tests and load
/// generators that play Slack).
pub fn sign(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(signing_secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(signing_secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Slack's published example (from its docs and its SDKs' tests), its negative cases, and a
    /// `block_actions` body signed with the documented algorithm.
    fn vectors() -> Vec<Value> {
        let file: Value = serde_json::from_str(include_str!(
            "../../tests/data/slack-signature-vectors.json"
        ))
        .unwrap();
        file["slack_v0"]["vectors"].as_array().unwrap().clone()
    }

    fn check(vector: &Value, signature: &str) -> Result<(), Refused> {
        verify(
            vector["signing_secret"].as_str().unwrap(),
            vector["timestamp"].as_str(),
            Some(signature),
            vector["body"].as_str().unwrap().as_bytes(),
            vector["now_for_test"].as_i64().unwrap(),
        )
    }

    #[test]
    fn every_vector_is_judged_as_published() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 5);
        for vector in &vectors {
            let id = vector["id"].as_str().unwrap();
            let expected = vector["expected"].as_str().unwrap();
            let signature = vector
                .get("expected_signature")
                .or_else(|| vector.get("presented_signature"))
                .and_then(Value::as_str)
                .unwrap();
            let outcome = check(vector, signature);
            if expected == "valid" {
                assert_eq!(outcome, Ok(()), "{id}");
                let signed = sign(
                    vector["signing_secret"].as_str().unwrap(),
                    vector["timestamp"].as_str().unwrap(),
                    vector["body"].as_str().unwrap().as_bytes(),
                );
                assert_eq!(signed, signature, "{id}");
            } else {
                assert!(outcome.is_err(), "{id}: {expected}");
            }
        }
    }

    #[test]
    fn the_official_negative_cases_fail_for_their_reason() {
        let vectors = vectors();
        let by_id = |id: &str| vectors.iter().find(|v| v["id"] == id).unwrap().clone();
        let tampered = by_id("slack_official_docs_tampered_body");
        assert_eq!(
            check(&tampered, tampered["presented_signature"].as_str().unwrap()),
            Err(Refused::Mismatch)
        );
        let expired = by_id("slack_official_docs_expired");
        assert_eq!(
            check(&expired, expired["presented_signature"].as_str().unwrap()),
            Err(Refused::Stale(301))
        );
    }

    #[test]
    fn the_window_is_five_minutes_either_way() {
        let body = b"payload=%7B%7D";
        let at = |now: i64| {
            let signature = sign("secret", "1000000", body);
            verify("secret", Some("1000000"), Some(&signature), body, now)
        };
        assert_eq!(at(1_000_300), Ok(()));
        assert_eq!(at(999_700), Ok(()));
        assert_eq!(at(1_000_301), Err(Refused::Stale(301)));
        assert_eq!(at(999_699), Err(Refused::Stale(-301)));
    }

    #[test]
    fn missing_or_malformed_headers_are_refused_before_any_hmac() {
        let body = b"x";
        let good = sign("secret", "1000", body);
        let verify = |ts: Option<&str>, sig: Option<&str>| verify("secret", ts, sig, body, 1000);
        assert_eq!(
            verify(None, Some(&good)),
            Err(Refused::Missing("X-Slack-Request-Timestamp"))
        );
        assert_eq!(
            verify(Some("1000"), None),
            Err(Refused::Missing("X-Slack-Signature"))
        );
        for timestamp in ["", "1e3", "１０００", "1000 ", "-"] {
            assert_eq!(
                verify(Some(timestamp), Some(&good)),
                Err(Refused::Malformed("X-Slack-Request-Timestamp")),
                "{timestamp:?}"
            );
        }
        let digits = good.strip_prefix("v0=").unwrap();
        for signature in [
            digits.to_string(),
            format!("v1={digits}"),
            format!("v0={}", &digits[..63]),
            format!("v0={digits}00"),
            format!("v0={}zz", &digits[..62]),
        ] {
            assert_eq!(
                verify(Some("1000"), Some(&signature)),
                Err(Refused::Malformed("X-Slack-Signature")),
                "{signature:?}"
            );
        }
        // A far-off timestamp cannot overflow the window check.
        assert!(matches!(
            verify(Some(&i64::MIN.to_string()), Some(&good)),
            Err(Refused::Stale(_))
        ));
    }

    #[test]
    fn another_secret_or_timestamp_does_not_match() {
        let body = b"payload=%7B%7D";
        let signature = sign("secret", "1000", body);
        assert_eq!(
            verify("other", Some("1000"), Some(&signature), body, 1000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify("secret", Some("1001"), Some(&signature), body, 1000),
            Err(Refused::Mismatch)
        );
        // Upper-case hex is the same signature.
        let upper = format!("v0={}", signature[3..].to_uppercase());
        assert_eq!(
            verify("secret", Some("1000"), Some(&upper), body, 1000),
            Ok(())
        );
    }
}
