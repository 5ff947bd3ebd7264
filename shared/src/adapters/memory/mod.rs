//! In-memory store and queue for the embedded mode and tests, with the same semantics as the
//! AWS adapters: versioned saves, per-pattern topic lookups, visibility timeouts, receive counts
//! and a dead-letter queue.

mod queue;
mod store;

pub use queue::MemoryQueue;
pub use store::MemoryStore;
