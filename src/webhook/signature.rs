//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): each delivery carries
//! `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64>`, the
//! HMAC-SHA256 of `id.timestamp.body` keyed with the webhook's secret, so a receiver can check
//! the body came from us, unchanged, and recently.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// The prefix Standard Webhooks secrets are written with.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest key accepted, in bytes (192 bits), as the specification asks.
pub const MIN_SECRET_BYTES: usize = 24;
/// The longest key accepted, in bytes (512 bits), as the specification asks.
pub const MAX_SECRET_BYTES: usize = 64;

/// The header naming the delivery; the same on every attempt, so receivers can drop repeats.
pub const ID_HEADER: &str = "webhook-id";
/// The header holding when the attempt was signed, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header holding the signature, `v1,<base64>`.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A webhook's signing key: the decoded bytes of its `whsec_…` secret. Its `Debug` does not show
/// them, and they are wiped when it is dropped.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

impl Secret {
    /// Reads a secret as the receiver was given it: `whsec_` followed by the standard base64 of
    /// 24 to 64 random bytes. The bare base64 without the prefix is accepted too, as the
    /// reference libraries accept it, so a receiver's secret can be pasted in either form.
    /// Surrounding whitespace (a trailing newline from a file) is ignored. The error never
    /// repeats the secret.
    pub fn parse(text: &str) -> Result<Secret, String> {
        const FORM: &str = "webhook secret must be whsec_ followed by base64 (24 to 64 bytes), \
             e.g. whsec_ and the output of `openssl rand -base64 32`";
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64
            .decode(encoded)
            .map_err(|_| format!("{FORM}; this one is not valid base64"))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(format!("{FORM}; this one decodes to {} bytes", key.len()));
        }
        Ok(Secret(key.into()))
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(text: &str) -> Result<Secret, String> {
        Secret::parse(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// The `webhook-signature` value for one attempt: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.expose_secret())
        .expect("HMAC takes keys of any size");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The three headers of one attempt, `webhook-id`, `webhook-timestamp` and `webhook-signature`,
/// as (name, value). Sign each attempt when it is sent: receivers refuse timestamps more than
/// five minutes away from their clock.
pub fn headers(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (ID_HEADER, id.to_string()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, sign(secret, id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The Standard Webhooks reference libraries' own test vectors.
    fn vectors() -> Vec<Value> {
        let file: Value = serde_json::from_str(include_str!(
            "../../tests/data/standard-webhooks-vectors.json"
        ))
        .unwrap();
        file["standard_webhooks_v1"]["vectors"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn sign_vector(vector: &Value) -> String {
        let secret: Secret = vector["secret"].as_str().unwrap().parse().unwrap();
        sign(
            &secret,
            vector["msg_id"].as_str().unwrap(),
            vector["timestamp"].as_i64().unwrap(),
            vector["payload"].as_str().unwrap().as_bytes(),
        )
    }

    #[test]
    fn every_published_signature_is_reproduced() {
        let vectors = vectors();
        let with_expected: Vec<&Value> = vectors
            .iter()
            .filter(|v| v.get("expected_signature").is_some())
            .collect();
        assert_eq!(
            with_expected.len(),
            2,
            "the file should hold both signing vectors"
        );
        for vector in with_expected {
            assert_eq!(
                sign_vector(vector),
                vector["expected_signature"].as_str().unwrap(),
                "{}",
                vector["id"]
            );
        }
    }

    #[test]
    fn a_tampered_signature_is_not_ours_and_a_listed_one_is() {
        let vectors = vectors();
        let by_id = |id: &str| vectors.iter().find(|v| v["id"] == id).unwrap();

        // The secret here has no whsec_ prefix: it must still give the same key.
        let invalid = by_id("stdwebhooks_invalid_signature");
        let ours = sign_vector(invalid);
        assert_ne!(ours, invalid["presented_signature"].as_str().unwrap());
        assert_eq!(
            ours,
            by_id("stdwebhooks_reference_sign")["expected_signature"]
                .as_str()
                .unwrap()
        );

        // A header listing several signatures is valid when one of its v1 entries is ours.
        let multi = by_id("stdwebhooks_multi_signature_header");
        let ours = sign_vector(multi);
        let listed: Vec<&str> = multi["presented_signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .collect();
        assert!(listed.contains(&ours.as_str()), "{ours} not in {listed:?}");
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let headers = headers(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            headers,
            [
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string()),
                ("webhook-timestamp", "1614265330".to_string()),
                (
                    "webhook-signature",
                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string()
                ),
            ]
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_being_repeated() {
        let too_short = format!("whsec_{}", BASE64.encode([7u8; 23]));
        let too_long = format!("whsec_{}", BASE64.encode([7u8; 65]));
        for (text, says) in [
            ("whsec_not*base64!", "not valid base64"),
            ("", "decodes to 0 bytes"),
            ("whsec_", "decodes to 0 bytes"),
            (too_short.as_str(), "decodes to 23 bytes"),
            (too_long.as_str(), "decodes to 65 bytes"),
        ] {
            let error = Secret::parse(text).unwrap_err();
            assert!(
                error.starts_with("webhook secret must be whsec_ followed by base64"),
                "{error}"
            );
            assert!(error.contains(says), "{text:?}: {error}");
            let body = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
            assert!(
                body.is_empty() || !error.contains(body),
                "{error} repeats the secret"
            );
        }
        assert!(Secret::parse(&format!("whsec_{}", BASE64.encode([7u8; 24]))).is_ok());
        assert!(Secret::parse(&format!("whsec_{}\n", BASE64.encode([7u8; 64]))).is_ok());
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret([REDACTED])");
    }
}
