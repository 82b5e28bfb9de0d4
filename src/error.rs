//! The one error type of hoopbot's use cases. Each variant is one API error code; the HTTP layer
//! turns it into `{"error": {"code", "message"}}` with the matching status.

use crate::domain::DecisionError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotInGroup(String),
    #[error("you cannot approve or reject your own request")]
    SelfApproval,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyDecided(String),
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    AlreadyApprovedByYou(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A signed chat request whose signature was seen before: a replay, and nothing was done.
    #[error("this signed request was already received")]
    Replayed,
    /// The client took too long to send its request.
    #[error("{0}")]
    Timeout(String),
    /// Too many tries of something that must not be guessed; try again after `retry_after`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// The stable machine-readable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::Unauthenticated(_) | Error::Replayed => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotInGroup(_) => "not_in_group",
            Error::SelfApproval => "self_approval",
            Error::NotFound(_) => "not_found",
            Error::AlreadyDecided(_) => "already_decided",
            Error::Expired(_) => "expired",
            Error::AlreadyApprovedByYou(_) => "already_approved_by_you",
            Error::TooLarge(_) => "too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Timeout(_) => "timeout",
            Error::RateLimited { .. } => "rate_limited",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<DecisionError> for Error {
    fn from(e: DecisionError) -> Error {
        let message = e.to_string();
        match e {
            DecisionError::AlreadyDecided(_) | DecisionError::GroupAlreadyApproved(..) => {
                Error::AlreadyDecided(message)
            }
            DecisionError::Expired => Error::Expired(message),
            DecisionError::SelfApproval => Error::SelfApproval,
            DecisionError::NotInGroup(_) => Error::NotInGroup(message),
            DecisionError::AlreadyApprovedByYou(_) => Error::AlreadyApprovedByYou(message),
            DecisionError::NotRequester => Error::Forbidden(message),
            DecisionError::ReasonRequired => Error::InvalidInput(message),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Internal(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
