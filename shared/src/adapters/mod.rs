//! Adapters: one per outside service. `sqlite` backs the embedded mode (feature `sqlite`),
//! `memory` throw-away runs and the tests; `dynamodb` and `sqs` back AWS; `kms` and `master_key` are the master keys that wrap the data keys (AWS, `serve`); `http` sends deliveries with the SSRF guard. [`CallCounter`]
//! counts AWS calls for the benchmarks and the sweeper's read bound.

pub mod aws_http;
mod call_counter;
pub mod dynamodb;
pub mod http;
pub mod kms;
pub mod master_key;
pub mod memory;
pub mod queue_checks;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod sqs;

pub use call_counter::CallCounter;

/// A failed AWS SDK call as a backend error, with the whole cause chain in its message.
pub(crate) fn aws_error<E: std::error::Error + Send + Sync + 'static>(
    err: E,
) -> crate::error::HubError {
    crate::error::HubError::backend(aws_smithy_error_context(&err))
}

fn aws_smithy_error_context(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
