//! Kubernetes API machinery that is independent of any kind: quantities, names and labels,
//! selectors, and patch formats.

pub mod document;
pub mod fields;
pub mod labels;
pub mod names;
pub mod offload;
pub mod patch;
pub mod quantity;
pub mod validation;

#[cfg(test)]
mod properties;
