//! `vexil-control`: the source of truth for flags.
//!
//! Operators manage environments, flags, evaluators (segments) and tokens through the admin REST API
//! ([`api`]); every change is one transaction in the [`store`] (SQLite or PostgreSQL) that numbers the
//! environment's revision, logs the change and audits it, so that sidecars can follow it. On
//! Kubernetes, the [`webhook`] injects the sidecar into the pods of opted-in namespaces.

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod auth_limit;
pub mod config;
pub mod guards;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
pub mod sync;
pub mod tls;
pub mod webhook;
