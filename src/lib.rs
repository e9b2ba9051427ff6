//! `promised` keeps Kratix Promises without Kubernetes.
//!
//! Module map:
//! - [`model`]: the Kratix kinds as plain data.
//! - [`config`]: reading a config repo (directory or Git ref) into classified objects.
//! - [`validate`]: cross-object checks and request admission, producing a validated config.
//! - [`pipeline`]: the pipeline runner (Kratix pipeline contract on the host, sandboxed).
//! - [`diag`]: errors and warnings that name file, document, object and field.
//! - [`cluster`]: in-cluster operation (Kubernetes client, RBAC access, Job runtime and
//!   leader election settings).
//! - [`health`]: HealthRecords, the health state store and health checks folded into each
//!   request's `status.healthStatus`.
//! - [`infra`]: Destination and state store status (`Ready`, events, last write).
//! - [`rollout`]: staged rollouts of a Promise version (UpgradePlans) and their progress.
//! - [`plan`]: `promised plan`, what a reconcile would do (a dry-run pass), for review.
//! - [`image`]: pulling, verifying, caching and unpacking OCI images for pipelines.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod events;
pub mod health;
pub mod image;
pub mod infra;
pub mod layout;
pub mod lint;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod reconcile;
pub mod rollout;
pub mod scheduler;
pub mod schema;
pub mod settings;
pub mod state;
pub mod status;
pub mod tmpfiles;
pub mod validate;
pub mod web;
