//! Errors as types. Every failure the hub can report is a [`HubError`]; the API maps it to an
//! HTTP status and a stable JSON `code` in exactly one place ([`HubError::status`], [`HubError::code`]).

use thiserror::Error;

/// Everything that can go wrong in the hub, from bad input to a storage outage.
#[derive(Debug, Error)]
pub enum HubError {
    /// The request is malformed or a field breaks a validation rule.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code, e.g. `invalid_topic`.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// No or unknown credentials.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The caller's token lacks a scope the operation needs.
    #[error("this operation needs the scope `{0}`")]
    InsufficientScope(String),
    /// The thing does not exist, or belongs to another account (never say which).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A concurrent change won the race; retrying the request is safe.
    #[error("the subscription changed concurrently; retry the request")]
    Conflict,
    /// The body is larger than the hub accepts.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// An event is larger than the pipeline can carry to a receiver once wrapped for delivery.
    #[error("the event is {size} bytes once wrapped for delivery; the limit is {limit}")]
    EventTooLarge {
        /// The wrapped size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Another request with the same idempotency key is being queued; retry shortly.
    #[error(
        "an event with this id is being queued by another request; retry in {retry_after_secs} s"
    )]
    InProgress {
        /// When to retry, seconds (sent as `Retry-After`).
        retry_after_secs: u64,
    },
    /// The account holds as many subscriptions as it may.
    #[error("the account already holds {0} subscriptions, the most it may; delete one first")]
    SubscriptionLimit(usize),
    /// Too many secret rotations within one overlap.
    #[error("at most {0} rotated-out secrets may sign at once; wait for the oldest overlap to end")]
    TooManyRotations(usize),
    /// The request body did not arrive in time.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// A backing service refused the input itself (not a transient failure): retrying the same
    /// request will not help.
    #[error("rejected by the queue: {0}")]
    Rejected(String),
    /// A backing service (DynamoDB, SQS) failed.
    #[error("backend failure: {0}")]
    Backend(String),
}

impl HubError {
    /// Shorthand for a validation failure.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        HubError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for a backend failure from any error type.
    pub fn backend(err: impl std::fmt::Display) -> Self {
        HubError::Backend(err.to_string())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::Invalid { .. } => 400,
            HubError::Unauthorized => 401,
            HubError::InsufficientScope(_) => 403,
            HubError::NotFound(_) => 404,
            HubError::MethodNotAllowed => 405,
            HubError::Conflict => 409,
            HubError::PayloadTooLarge(_) | HubError::EventTooLarge { .. } => 413,
            HubError::InProgress { .. } | HubError::SubscriptionLimit(_) => 409,
            HubError::TooManyRotations(_) => 409,
            HubError::RequestTimeout(_) => 408,
            HubError::Rejected(_) => 400,
            HubError::Backend(_) => 503,
        }
    }

    /// The stable JSON `code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            HubError::Invalid { code, .. } => code,
            HubError::Unauthorized => "unauthorized",
            HubError::InsufficientScope(_) => "insufficient_scope",
            HubError::NotFound(_) => "not_found",
            HubError::MethodNotAllowed => "method_not_allowed",
            HubError::Conflict => "conflict",
            HubError::PayloadTooLarge(_) | HubError::EventTooLarge { .. } => "payload_too_large",
            HubError::InProgress { .. } => "in_progress",
            HubError::SubscriptionLimit(_) => "subscription_limit_reached",
            HubError::TooManyRotations(_) => "too_many_rotations",
            HubError::RequestTimeout(_) => "request_timeout",
            HubError::Rejected(_) => "rejected",
            HubError::Backend(_) => "backend_unavailable",
        }
    }
}

impl HubError {
    /// The message a client sees. Backend failures carry internal details (ARNs, account ids,
    /// endpoints): those go to the log, the client gets a fixed sentence.
    pub fn public_message(&self) -> String {
        match self {
            HubError::Backend(_) => {
                "a backing service is unavailable; retry the request later".to_string()
            }
            other => other.to_string(),
        }
    }
}

/// Result with a [`HubError`].
pub type Result<T, E = HubError> = std::result::Result<T, E>;
