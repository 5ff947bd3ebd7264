//! The services: what the API and the queue consumers do, written once against the ports.

pub mod catalog;
pub mod delivery;
pub mod events;
pub mod history;
pub mod ingest;
pub mod lease;
pub mod odometer;
pub mod operational;
pub mod ordered;
pub mod pace;
pub mod portal;
pub mod recovery;
pub mod secrets;
pub mod subscriptions;
