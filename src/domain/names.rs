//! Names that come from outside: a connection's name and a person's email. Each surface parses
//! them where they enter (an HTTP body, the agent protocol, the config, the command line), so a
//! malformed one is refused there with a clear message and the rules inside take them as given.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a text is not a name: said so that it can be shown to whoever gave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(String);

/// A connection's name: letters, digits, '-', '_' and '.', compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConnectionName(String);

impl ConnectionName {
    /// `name` as a connection name, as given: surrounding spaces are an error here (the config
    /// trims its own values before parsing them).
    pub fn parse(name: &str) -> Result<ConnectionName, InvalidName> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(allowed) {
            return Err(InvalidName(format!(
                "{name:?} is not a connection name: use letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(ConnectionName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's email address: trimmed, with an '@' and no NUL. Two addresses are the same person
/// when they match ignoring ASCII case; the spelling given is kept for display.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(email: &str) -> Result<Email, InvalidName> {
        let email = email.trim();
        // Postgres refuses a NUL in text; no address holds one.
        if email.contains('\0') {
            return Err(InvalidName(format!(
                "{email:?} is not an email address: it has a NUL byte"
            )));
        }
        if !email.contains('@') {
            return Err(InvalidName(format!("{email:?} is not an email address")));
        }
        Ok(Email(email.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Email) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Email {}

/// The parsing, conversions and display both names share.
macro_rules! name_conversions {
    ($($name:ident),*) => {$(
        impl FromStr for $name {
            type Err = InvalidName;

            fn from_str(text: &str) -> Result<$name, InvalidName> {
                $name::parse(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;

            fn try_from(text: String) -> Result<$name, InvalidName> {
                $name::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so widths and alignment in format strings apply.
                f.pad(&self.0)
            }
        }
    )*};
}

name_conversions!(ConnectionName, Email);

/// Looked up by `&str` in maps keyed by name (an agent's targets, by the job's connection).
impl Borrow<str> for ConnectionName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_names_are_letters_digits_and_three_marks() {
        for good in ["prod-db", "a", "db_2.eu"] {
            assert_eq!(ConnectionName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "prod db", " prod-db", "prod\0db", "prod/db", "prød"] {
            let err = ConnectionName::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a connection name"), "{bad:?}: {err}");
        }
        assert!(serde_json::from_str::<ConnectionName>("\"a b\"").is_err());
        assert_eq!(
            serde_json::to_string(&ConnectionName::parse("x").unwrap()).unwrap(),
            "\"x\""
        );
    }

    #[test]
    fn emails_are_trimmed_need_an_at_and_match_ignoring_case() {
        let alice = Email::parse("  Alice@X.com ").unwrap();
        assert_eq!(alice.as_str(), "Alice@X.com");
        assert_eq!(alice, Email::parse("alice@x.com").unwrap());
        assert_ne!(alice, Email::parse("bob@x.com").unwrap());
        assert!(Email::parse("alice").is_err());
        assert!(Email::parse("").is_err());
        assert!(
            Email::parse("a\0@x.com")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        assert_eq!(
            format!("[{:<8}]", Email::parse("a@b").unwrap()),
            "[a@b     ]"
        );
    }
}
