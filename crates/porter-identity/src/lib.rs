//! Porter's identity: who is asking. It owns the verification of JWT bearer tokens (HMAC secret and
//! JWKS key sets), sessions opened with a token and resumed by `X-Session-ID`, the token-revocation
//! check of a caller, and the [`Caller`] of a request with the session action still pending on it.
//! It knows no HTTP framework: the gateway hands it raw header values ([`Presented`]) and maps its
//! [`IdentityError`]s to statuses.
//!
//! Dependencies: `porter-store` holds the sessions and revocations (the [`porter_store::Store`]
//! trait), and `porter-broker`'s [`porter_broker::TaskClient`] declares and renews each
//! session's exchange.
//!
//! - [`resolve`]: [`Resolver`], from the presented headers to a [`Caller`].
//! - [`caller`]: [`Caller`] and the [`SessionUse`] it owns.
//! - [`jwt`]: [`Verifier`] and its [`JwtSettings`]; the subject of verified claims.
//! - [`jwks`]: key sets from a file or URL, cached and refreshed on rotation.
//! - [`sessions`]: [`Sessions`], opened with a token and resumed by id.
//! - [`revocation`]: the revocation check of a caller, and how long revocations are kept.
//! - [`model`]: [`Identity`] and the [`Credential`] that names a token for revocation.
//! - [`error`]: [`IdentityError`] with its stable codes, and configuration errors.
//! - [`clock`]: Unix seconds, as claims count them.
//! - [`time_claims`]: `exp`, `nbf` and `iat` as RFC 7519 NumericDates, and their check.
//!
//! Architecture Invariant: a key verifies only algorithms of its own family, and a token's
//! `alg` must be in the allowed list: HMAC uses the configured secret, never a public key;
//! `none` does not exist ([`jwt`], [`jwks`]).
//!
//! Architecture Invariant: a token is never stored, logged or compared in the clear outside
//! verification: revocations and sessions keep its SHA-256 (and `jti`), sessions are stored
//! under the SHA-256 of their id, and neither a token nor a session id appears in a log line.
//!
//! Architecture Invariant: a session never outlives its token: it is refused and deleted once
//! the token's `exp` + leeway has passed, and deleted by the first use that finds the token
//! revoked, so no session comes back when a revocation key expires.

pub mod caller;
pub mod clock;
pub mod error;
pub mod jwks;
pub mod jwt;
pub mod model;
pub mod resolve;
pub mod revocation;
pub mod sessions;
pub mod time_claims;

pub use caller::{Caller, SessionUse};
pub use clock::now_secs;
pub use error::{AlgorithmError, IdentityError, JwksError};
pub use jwks::{Family, Jwks, JwksSource, KeyError, MAX_JWKS_BYTES};
pub use jwt::{JwtSettings, Verifier, parse_algorithms, subject};
pub use model::{Credential, Identity, token_sha256};
pub use resolve::{Presented, Resolver};
pub use revocation::{UnreadableExpiry, revocation_ttl, unverified_claims, unverified_expiry};
pub use sessions::Sessions;
pub use time_claims::{NumericDate, TimeClaimError};
