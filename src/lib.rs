//! Stowage: a storage control plane with a Kubernetes-compatible REST API.
//!
//! The folders are the architecture:
//! - [`api`]: HTTP, Kubernetes wire format, discovery, OpenAPI, watch streams;
//! - [`registry`]: API semantics (validation, concurrency, finalizers) for every kind;
//! - [`resources`]: the kinds and their per-kind rules;
//! - [`store`]: durable SQLite storage with an in-memory cache and change feed;
//! - [`runtime`] and [`controllers`]: level-triggered controllers (binder, provisioner, ...);
//! - [`providers`]: the storage providers this server has (see `providers/` for the crates);
//! - [`machinery`]: kind-independent pieces (quantities, selectors, patches);
//! - [`console`]: the web console at `/ui/` (a page on the public API);
//! - [`node`]: the node agent (`stowage node`);
//! - [`cli`] and [`server`]: the `stowage` binary.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod controllers;
pub mod error;
pub mod machinery;
pub mod metrics;
pub mod node;
pub mod providers;
pub mod registry;
pub mod resources;
pub mod runtime;
pub mod server;
pub mod store;
