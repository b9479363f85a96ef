//! Resource quantities: the parser lives in the provider SDK (providers size volumes with it
//! too); this adds the bridge from k8s-openapi's string wrapper.

pub use stowage_provider::quantity::{Format, Quantity, QuantityError, parse_bytes};

/// Bytes of a k8s-openapi quantity, or `None` if it does not parse.
pub fn bytes_of(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<i64> {
    Quantity::parse(&q.0).ok().map(|q| q.bytes())
}
