//! webhook-hub's core (`hub`, in `shared/`), shared by every Lambda function and the embedded
//! mode.
//!
//! - [`context`]: the [`Hub`] every service call gets (ports and settings).
//! - [`topic`], [`model`], [`validate`], [`signing`], [`retry`], [`pacing`], [`ssrf`],
//!   [`catalog`]: pure domain logic.
//! - [`service`]: what the API and the queue consumers do, written once against the [`ports`].
//! - [`adapters`]: the ports on AWS (DynamoDB, SQS), in memory, and over HTTP.
//! - [`api`]: the HTTP API router, error mapping and security headers, shared by Lambda and
//!   the embedded server.
//! - [`runtime`]: wiring from configuration, the queue consumers and the Lambda entry points.

pub mod adapters;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod clock;
pub mod context;
pub mod error;
pub mod keyring;
pub mod metrics;
pub mod model;
pub mod pacing;
pub mod ports;
pub mod retry;
pub mod runtime;
pub mod service;
pub mod signing;
pub mod ssrf;
pub mod topic;
pub mod trace;
pub mod validate;

pub use context::{Hub, Settings};
pub use error::{ErrorCode, HubError, Result};
