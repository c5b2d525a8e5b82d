//! Scoped-token endpoints: extra authorization routes a policy declares with `[[endpoint]]`.
//!
//! They are part of the policy and live in `policy/endpoint.rs`; this module keeps their
//! public path, `porter_core::endpoint`.

pub use crate::policy::endpoint::{
    DEFAULT_SECRET_ENV, Endpoint, MESSAGE_INVALID_TOKEN, MESSAGE_NO_MATCH,
};
