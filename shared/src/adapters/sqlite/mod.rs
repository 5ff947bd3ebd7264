//! The SQLite adapters: the embedded mode's durable [`Store`](crate::ports::Store) and
//! [`Queue`](crate::ports::Queue)s in one database file, so `webhook-hub serve` keeps across a
//! restart or a crash everything it answered `201`/`202` for (docs/sqlite.md).
//!
//! One writer thread owns the only writing connection and commits in groups: every write waiting
//! when a transaction starts joins it (each in its own savepoint, so one failing write does not
//! undo the others), and each caller is answered only after the group's `COMMIT`. Reads go
//! through it too (its page cache stays warm). The store's `prune`, called by the sweeper, keeps
//! the file bounded: expired idempotency keys and delivery logs are deleted, and free pages are
//! given back to the file system.

mod db;
mod keys_snapshot;
mod queue;
mod schema;
mod store;

pub use db::{Admission, DbOptions, Durability, SqliteDb, backup};
pub use keys_snapshot::KeysSnapshot;
pub use queue::SqliteQueue;
pub use store::{SqliteStore, catalog_snapshot};
