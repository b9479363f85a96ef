//! End-to-end tests: every test drives a real `stowage serve` process over HTTP.

mod api_basics;
mod api_errors;
mod api_lists;
mod api_watch;
mod attach;
mod binding;
mod cli;
mod discovery;
mod durability;
mod ebs;
mod hostile;
mod nfs;
mod node_agent;
mod provisioning;
mod replicas;
mod security;
mod snapshots;
mod storage_kinds;
mod support;
