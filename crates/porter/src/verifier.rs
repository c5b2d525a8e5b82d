//! Builds the gateway's identity resolver from the command-line settings: the token verifier
//! (JWT secret, JWKS, issuer, audience, leeway, allowed algorithms) and its sessions.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use porter_broker::TaskClient;
use porter_identity::{JwksSource, JwtSettings, Resolver, Sessions, Verifier, parse_algorithms};
use porter_store::Store;

use crate::cli::HttpArgs;

pub fn verifier(
    http: &HttpArgs,
    store: Arc<dyn Store>,
    tasks: Arc<dyn TaskClient>,
) -> anyhow::Result<Resolver> {
    let identity = &http.identity;
    let algorithms =
        parse_algorithms(&identity.jwt_algorithms).context("invalid PORTER_JWT_ALGORITHMS")?;
    if let Some(source) = identity
        .jwks
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| JwksSource::parse(s.trim()))
    {
        // Keys over plain http from a remote host could be swapped in transit: refused at
        // start-up, not at the first token.
        source.check().context("invalid PORTER_JWKS")?;
    }
    let settings = JwtSettings {
        secret: http
            .jwt_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec()),
        jwks: identity
            .jwks
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| JwksSource::parse(s.trim())),
        issuer: identity.jwt_issuer.clone().filter(|s| !s.is_empty()),
        audience: identity
            .jwt_audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        leeway: Duration::from_secs(identity.jwt_leeway),
        algorithms,
        jwks_refresh_interval: Duration::from_secs(identity.jwks_refresh_interval),
        jwks_max_age: Duration::from_secs(identity.jwks_max_age.max(1)),
        revocation_ttl: Duration::from_secs(identity.revocation_ttl.max(1)),
    };
    let sessions = Sessions::new(
        store,
        tasks,
        Duration::from_secs(identity.session_ttl.max(1)),
    );
    Ok(Resolver::new(Verifier::new(settings)).with_sessions(sessions))
}

/// Reads the JWKS before serving. An unreadable JWKS *file* is a configuration error; an
/// unreachable JWKS URL is only logged, and read again when a token needs it.
pub async fn preload(resolver: &Resolver, http: &HttpArgs) -> anyhow::Result<()> {
    if let Err(error) = resolver.preload().await {
        match http.identity.jwks.as_deref().map(JwksSource::parse) {
            Some(JwksSource::File(_)) => anyhow::bail!("PORTER_JWKS: {error}"),
            _ => tracing::warn!(%error, "could not read the JWKS yet; will retry on demand"),
        }
    }
    Ok(())
}
