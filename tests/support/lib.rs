//! Test support for the end-to-end suites: a `webhook-hub serve` process on any backend, a
//! capturing receiver with scripted faults, and a Standard Webhooks verifier written
//! independently of the hub's signer.

mod aws_faults;
mod fault_servers;
mod flow;
mod inprocess;
mod lambda;
mod otlp;
mod process;
mod python;
mod receiver;
mod streams;
mod verify;

pub use aws_faults::*;
pub use fault_servers::*;
pub use flow::*;
pub use inprocess::*;
pub use lambda::*;
pub use otlp::*;
pub use process::*;
pub use python::*;
pub use receiver::*;
pub use streams::*;
pub use verify::*;

use std::time::{Duration, Instant};

/// Polls `check` until it finds what it wants; panics with `what` after `timeout`. The one wait
/// loop of the suites: every "eventually" goes through it (or through [`within`]).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(found) => found,
        None => panic!("expected {what} within {timeout:?}"),
    }
}

/// Polls `check` until it finds what it wants, or `None` after `timeout` (for callers that
/// report what they saw instead).
pub async fn within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the calling module's `contract(store)` as three tests, `memory`, `sqlite` and `aws`: one
/// storage concern's contract against every adapter (the store itself, not through the API).
#[macro_export]
macro_rules! contract_on_every_store {
    () => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn memory() {
            contract(&hub::adapters::memory::MemoryStore::default()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            let hub =
                $crate::InProcess::start($crate::Backend::Sqlite, hub::Settings::default()).await;
            contract(&*hub.hub.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn aws() {
            let hub =
                $crate::InProcess::start($crate::Backend::Aws, hub::Settings::default()).await;
            contract(&*hub.hub.store).await;
        }
    };
}

/// Runs each named scenario of the calling file's `scenarios` module as three tests,
/// `memory::…`, `sqlite::…` and `aws::…`: the same suite against each backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { scenarios::$name($crate::Backend::Memory).await } )*
        }
        mod sqlite {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { scenarios::$name($crate::Backend::Sqlite).await } )*
        }
        mod aws {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { scenarios::$name($crate::Backend::Aws).await } )*
        }
    };
}
