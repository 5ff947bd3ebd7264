//! How the hub runs: configuration from the environment ([`config`]), the composition roots
//! ([`wiring`]), the queue consumers ([`consume`]) shared by the Lambda functions ([`lambda`])
//! and the embedded pollers ([`embedded`]), private files ([`files`]), the log line
//! ([`log_line`]), `serve`'s log writer ([`log_writer`]) and the trace exporter ([`telemetry`]).

pub mod config;
pub mod consume;
pub mod embedded;
pub mod files;
pub mod lambda;
pub mod log_line;
pub mod log_writer;
pub mod telemetry;
pub mod wiring;

pub use config::*;
pub use wiring::*;
