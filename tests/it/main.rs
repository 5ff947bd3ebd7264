//! The integration tests, one binary (the SDK-heavy support crate links once): each module is
//! a suite, run on every backend its behaviour exists on.
//!
//! - `e2e`: the whole path and the API contract; `catalog`: the event-type catalog and its export; `batch`: batch publishing; `faults`: receivers that fail, crashes;
//!   `lease`: leases and the sweeper; `durable`: the SQLite backend across restarts and crashes; `vendors`: each source's contract; `hardening`: the
//!   security review's findings; `burst`: load (the sweep at scale is its own binary, `sweep_scale`, so its 10,000-item moto table does not slow the rest); `replay`, `lambda_boot`: the
//!   `events/` samples through the handlers and the built binaries; `openapi`: the document; `paths`: error and race paths, one test each; `metrics`: `/metrics` read by an independent parser; `pushback`: AWS throttling and partial batches through a fault proxy.

mod asymmetric;
mod batch;
mod burst;
mod catalog;
mod controls;
mod customers;
mod dead_letters;
mod durable;
mod e2e;
mod faults;
mod hardening;
mod history;
mod ingest;
mod keys;
mod lambda_boot;
mod lease;
mod listen;
mod metrics;
mod odometer;
mod openapi;
mod ordered;
mod pacing;
mod paths;
mod portal;
mod pushback;
mod recovery;
mod replay;
mod template;
mod traces;
mod vendors;
