//! Errors as types. Every failure the hub can report is a [`HubError`]; the API maps it to an
//! HTTP status and a stable JSON `code` in exactly one place ([`HubError::status`], [`HubError::code`]).

use thiserror::Error;

/// Declares [`ErrorCode`]: each variant with its wire name.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)*) => {
        /// Every stable `code` the API answers with: the contract's list of errors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the contract.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not JSON, or not the JSON the operation takes.
    InvalidJson = "invalid_json",
    /// The request body could not be read.
    InvalidBody = "invalid_body",
    /// A topic or pattern breaks the topic grammar.
    InvalidTopic = "invalid_topic",
    /// The topic list is empty, too long, or given twice.
    InvalidTopics = "invalid_topics",
    /// No topic was given.
    MissingTopics = "missing_topics",
    /// The callback URL is malformed or too long.
    InvalidCallbackUrl = "invalid_callback_url",
    /// The callback URL is not `https`.
    WebhookUnsupportedProtocol = "WebhookUnsupportedProtocol",
    /// The callback URL points at a non-public address.
    ForbiddenTarget = "forbidden_target",
    /// Another subscription of the account uses this callback URL.
    DuplicateCallbackUrl = "duplicate_callback_url",
    /// The lease is outside 60 s to 7 days.
    InvalidExpires = "invalid_expires",
    /// The name is too long.
    InvalidName = "invalid_name",
    /// `user_data` is too large.
    InvalidUserData = "invalid_user_data",
    /// The client secret has the wrong form.
    InvalidClientSecret = "invalid_client_secret",
    /// A label filter or event labels break their bounds.
    InvalidLabels = "invalid_labels",
    /// Receiver credentials are empty, too long, or set a reserved header.
    InvalidReceiverAuth = "invalid_receiver_auth",
    /// The signature scheme does not go with the signing algorithm.
    InvalidSignatureScheme = "invalid_signature_scheme",
    /// The secrecy level is not 0, 1 or 2.
    InvalidSecrecyLevel = "invalid_secrecy_level",
    /// The sensitive-field map is malformed.
    InvalidSensitive = "invalid_sensitive",
    /// The event data nests too deeply.
    InvalidData = "invalid_data",
    /// The producer id is empty or too long.
    InvalidEventId = "invalid_event_id",
    /// A batch publish holds no events or more than it may.
    InvalidBatch = "invalid_batch",
    /// A message on an ingest queue from a sender (or an EventBridge source) that no account
    /// is mapped to.
    UnknownPublisher = "unknown_publisher",
    /// A producer published under the hub's own `hub.` namespace.
    ReservedTopic = "reserved_topic",
    /// An event type's schema is not a usable JSON Schema (draft 2020-12).
    InvalidSchema = "invalid_schema",
    /// An event type's example does not match its schema, or its examples break their bounds.
    InvalidExample = "invalid_example",
    /// An event type's description is too long.
    InvalidDescription = "invalid_description",
    /// An event's `data` does not match its type's schema and the account enforces schemas.
    SchemaViolation = "schema_violation",
    /// An event's topic is not in the catalog and the account refuses undeclared topics.
    UnknownEventType = "unknown_event_type",
    /// The account declares as many event types as it may.
    EventTypeLimitReached = "event_type_limit_reached",
    /// A time is not RFC 3339, or a window ends before it starts.
    InvalidTime = "invalid_time",
    /// A page size is not a number from 1 to 100.
    InvalidLimit = "invalid_limit",
    /// The confirmation token does not match.
    InvalidToken = "invalid_token",
    /// The confirmation link has no token.
    MissingToken = "missing_token",
    /// Bulk removal was asked without `owner=me`.
    MissingOwner = "missing_owner",
    /// A duration setting does not parse.
    InvalidDuration = "invalid_duration",
    /// A subscription's attempt timeout is outside 1 to 30 seconds.
    InvalidTimeout = "invalid_timeout",
    /// A subscription's rate limit is outside 1 to 1,000 a second.
    InvalidMaxPerSecond = "invalid_max_per_second",
    /// A retry schedule is too long or a delay too large.
    InvalidRetrySchedule = "invalid_retry_schedule",
    /// A setting from the environment does not parse.
    InvalidSetting = "invalid_setting",
    /// A test-clock jump is not a number of at most ten years.
    InvalidMs = "invalid_ms",
    /// An owner (of a portal session, a subscription or an event) is empty, too long or not
    /// printable, or an event names an owner and is a broadcast at once.
    InvalidOwner = "invalid_owner",
    /// A change of a subscription's owner: it is fixed at creation.
    ImmutableOwner = "immutable_owner",
    /// A portal session's theme names an unknown variable or a value that is not a colour.
    InvalidTheme = "invalid_theme",
    /// A portal session token that the hub did not sign, or that was altered.
    InvalidSession = "invalid_session",
    /// A portal session token past its end.
    SessionExpired = "session_expired",
    /// No or an unknown bearer token.
    Unauthorized = "unauthorized",
    /// The token lacks a scope the operation needs.
    InsufficientScope = "insufficient_scope",
    /// No such thing in the caller's account.
    NotFound = "not_found",
    /// The route exists, not with this method.
    MethodNotAllowed = "method_not_allowed",
    /// A concurrent change won; retrying is safe.
    Conflict = "conflict",
    /// The body or the event is too large.
    PayloadTooLarge = "payload_too_large",
    /// An event with this id is still being queued; retry after `Retry-After`.
    InProgress = "in_progress",
    /// The account holds as many subscriptions as it may.
    SubscriptionLimitReached = "subscription_limit_reached",
    /// The owner holds as many subscriptions as it may.
    OwnerSubscriptionLimitReached = "owner_subscription_limit_reached",
    /// The owner's confirmation requests of the last hour are used up.
    TooManyConfirmations = "too_many_confirmations",
    /// Too many rotated-out secrets still sign.
    TooManyRotations = "too_many_rotations",
    /// The delivery is parked until its subscription is resumed.
    DeliveryParked = "delivery_parked",
    /// The subscription is not active (pending, paused or disabled), so it takes no test event.
    SubscriptionNotActive = "subscription_not_active",
    /// The request body did not arrive in time.
    RequestTimeout = "request_timeout",
    /// A backing service refused the input itself.
    Rejected = "rejected",
    /// The database is full (its disk, or its size limit); retry later.
    StorageFull = "storage_full",
    /// The event history is turned off on this deployment.
    HistoryOff = "history_off",
    /// A listing cursor that this listing did not give.
    InvalidCursor = "invalid_cursor",
    /// A backing service failed; retry later.
    BackendUnavailable = "backend_unavailable",
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong in the hub, from bad input to a storage outage. `Clone`, so one
/// failure can answer for each event of a batch it touched.
#[derive(Debug, Clone, Error)]
pub enum HubError {
    /// The request is malformed or a field breaks a validation rule.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code, e.g. [`ErrorCode::InvalidTopic`].
        code: ErrorCode,
        /// What is wrong, for a human.
        message: String,
    },
    /// No or unknown credentials.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A portal session token that does not verify.
    #[error("this portal link is not valid; ask for a new one")]
    InvalidSession,
    /// A portal session token past its end.
    #[error("this portal session has expired; ask for a new link")]
    SessionExpired,
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
    /// An owner holds as many subscriptions as it may (pending ones included).
    #[error(
        "this customer already holds {0} subscriptions, the most one customer may; delete one first"
    )]
    OwnerSubscriptionLimit(usize),
    /// An owner has had as many confirmation requests sent in the last hour as it may.
    #[error(
        "this customer has had {per_hour} confirmation requests sent in the last hour, the most it may; retry in {retry_after_secs} s"
    )]
    TooManyConfirmations {
        /// The bound per hour.
        per_hour: u32,
        /// When the window ends, seconds (sent as `Retry-After`).
        retry_after_secs: u64,
    },
    /// Too many secret rotations within one overlap.
    #[error("at most {0} rotated-out secrets may sign at once; wait for the oldest overlap to end")]
    TooManyRotations(usize),
    /// A parked delivery was asked to be resent.
    #[error(
        "the delivery is parked while the subscription is paused or disabled; resume the subscription to release it"
    )]
    Parked,
    /// A test event was asked for a subscription that is not active.
    #[error(
        "the subscription is {0}; only an active subscription takes a test event (confirm or resume it first)"
    )]
    NotActive(&'static str),
    /// The request body did not arrive in time.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    /// A backing service refused the input itself (not a transient failure): retrying the same
    /// request will not help.
    #[error("rejected by the queue: {0}")]
    Rejected(String),
    /// The database cannot grow (its disk is full, or it is at its size limit): nothing of the
    /// request was written. Deliveries of what is stored go on and free space as they finish.
    #[error(
        "the hub's storage is full; nothing was written. Deliveries already accepted go on and \
         free space as they finish: retry in {retry_after_secs} s"
    )]
    StorageFull {
        /// When to retry, seconds (sent as `Retry-After`).
        retry_after_secs: u64,
    },
    /// The event history is turned off (`HUB_HISTORY=off`), so no event is kept to read or
    /// resend.
    #[error(
        "the event history is turned off on this deployment (HUB_HISTORY=off): events are not kept once delivered"
    )]
    HistoryOff,
    /// An event's `data` does not match its type's schema, and the account enforces schemas.
    #[error(
        "`data` does not match the schema of `{topic}`: {}",
        summary(violations)
    )]
    SchemaViolation {
        /// The event's topic.
        topic: String,
        /// The first places that do not match.
        violations: Vec<crate::catalog::Violation>,
    },
    /// A backing service (DynamoDB, SQS) failed.
    #[error("backend failure: {0}")]
    Backend(String),
}

impl HubError {
    /// Shorthand for a validation failure.
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The database is full: the client is asked to retry after this long.
    pub fn storage_full() -> Self {
        HubError::StorageFull {
            retry_after_secs: 30,
        }
    }

    /// Shorthand for a backend failure from any error type.
    pub fn backend(err: impl std::fmt::Display) -> Self {
        HubError::Backend(err.to_string())
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HubError::Invalid { .. } | HubError::SchemaViolation { .. } => 400,
            HubError::Unauthorized | HubError::InvalidSession | HubError::SessionExpired => 401,
            HubError::InsufficientScope(_) => 403,
            HubError::NotFound(_) | HubError::HistoryOff => 404,
            HubError::MethodNotAllowed => 405,
            HubError::Conflict => 409,
            HubError::PayloadTooLarge(_) | HubError::EventTooLarge { .. } => 413,
            HubError::InProgress { .. } | HubError::SubscriptionLimit(_) => 409,
            HubError::OwnerSubscriptionLimit(_) => 409,
            HubError::TooManyConfirmations { .. } => 429,
            HubError::TooManyRotations(_) | HubError::Parked | HubError::NotActive(_) => 409,
            HubError::RequestTimeout(_) => 408,
            HubError::Rejected(_) => 400,
            HubError::StorageFull { .. } | HubError::Backend(_) => 503,
        }
    }

    /// The stable JSON `code` of this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            HubError::Invalid { code, .. } => *code,
            HubError::SchemaViolation { .. } => ErrorCode::SchemaViolation,
            HubError::Unauthorized => ErrorCode::Unauthorized,
            HubError::InvalidSession => ErrorCode::InvalidSession,
            HubError::SessionExpired => ErrorCode::SessionExpired,
            HubError::InsufficientScope(_) => ErrorCode::InsufficientScope,
            HubError::NotFound(_) => ErrorCode::NotFound,
            HubError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            HubError::Conflict => ErrorCode::Conflict,
            HubError::PayloadTooLarge(_) | HubError::EventTooLarge { .. } => {
                ErrorCode::PayloadTooLarge
            }
            HubError::InProgress { .. } => ErrorCode::InProgress,
            HubError::SubscriptionLimit(_) => ErrorCode::SubscriptionLimitReached,
            HubError::OwnerSubscriptionLimit(_) => ErrorCode::OwnerSubscriptionLimitReached,
            HubError::TooManyConfirmations { .. } => ErrorCode::TooManyConfirmations,
            HubError::TooManyRotations(_) => ErrorCode::TooManyRotations,
            HubError::Parked => ErrorCode::DeliveryParked,
            HubError::NotActive(_) => ErrorCode::SubscriptionNotActive,
            HubError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            HubError::Rejected(_) => ErrorCode::Rejected,
            HubError::StorageFull { .. } => ErrorCode::StorageFull,
            HubError::HistoryOff => ErrorCode::HistoryOff,
            HubError::Backend(_) => ErrorCode::BackendUnavailable,
        }
    }

    /// Whether trying the same thing again later may succeed (a backing service failed, a
    /// concurrent change or claim won); otherwise the input itself is refused for good.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HubError::Backend(_)
                | HubError::StorageFull { .. }
                | HubError::Conflict
                | HubError::InProgress { .. }
        )
    }

    /// Where an event's `data` did not match its schema (a `schema_violation`); empty for
    /// every other error.
    pub fn violations(&self) -> &[crate::catalog::Violation] {
        match self {
            HubError::SchemaViolation { violations, .. } => violations,
            _ => &[],
        }
    }

    /// The stable JSON `code` of this error, as text.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
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

/// The violations of a schema in one line: each pointer and its reason.
fn summary(violations: &[crate::catalog::Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                if v.pointer.is_empty() {
                    "/"
                } else {
                    &v.pointer
                },
                v.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result with a [`HubError`].
pub type Result<T, E = HubError> = std::result::Result<T, E>;
