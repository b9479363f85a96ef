//! The Stowage provider SDK.
