//! Builds the gateway's identity resolver from the command-line settings: the token verifier
//! (JWT secret, JWKS, issuer, audience, leeway, allowed algorithms) and its sessions, warning at
//! start when bearer tokens are accepted with neither an issuer nor an audience to check.

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
    if let Some(warning) = unbound_tokens_warning(&settings) {
        tracing::warn!("{warning}");
    }
    let sessions = Sessions::new(
        store,
        tasks,
        Duration::from_secs(identity.session_ttl.max(1)),
    );
    Ok(Resolver::new(Verifier::new(settings)).with_sessions(sessions))
}

/// The start-up warning for settings that accept bearer tokens but check neither whom they
/// were issued by (`iss`) nor for (`aud`): any token the keys verify is taken, also one minted
/// for another service that shares the keys or the identity provider. `None` when tokens are
/// not accepted at all, or either check is configured.
fn unbound_tokens_warning(settings: &JwtSettings) -> Option<&'static str> {
    let accepts_tokens = settings.secret.is_some() || settings.jwks.is_some();
    let bound = settings.issuer.is_some() || !settings.audience.is_empty();
    (accepts_tokens && !bound).then_some(
        "bearer tokens are accepted without an issuer or audience check: any token the keys \
         verify is taken, whoever it was issued for; set PORTER_JWT_ISSUER or PORTER_JWT_AUDIENCE",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_accepted_without_iss_or_aud_are_warned_about() {
        let secret = || Some(b"s".to_vec());
        let jwks = || Some(JwksSource::parse("/etc/porter/jwks.json"));
        for (settings, warned) in [
            // Tokens accepted, nothing says whose: warned, by secret or by key set.
            (
                JwtSettings {
                    secret: secret(),
                    ..JwtSettings::default()
                },
                true,
            ),
            (
                JwtSettings {
                    jwks: jwks(),
                    ..JwtSettings::default()
                },
                true,
            ),
            // Either check is enough.
            (
                JwtSettings {
                    secret: secret(),
                    issuer: Some("https://idp".into()),
                    ..JwtSettings::default()
                },
                false,
            ),
            (
                JwtSettings {
                    jwks: jwks(),
                    audience: vec!["porter".into()],
                    ..JwtSettings::default()
                },
                false,
            ),
            // No tokens accepted at all: nothing to warn about.
            (JwtSettings::default(), false),
        ] {
            let warning = unbound_tokens_warning(&settings);
            assert_eq!(warning.is_some(), warned, "{settings:?}");
            if let Some(warning) = warning {
                assert!(warning.contains("PORTER_JWT_ISSUER"), "{warning}");
                assert!(warning.contains("PORTER_JWT_AUDIENCE"), "{warning}");
            }
        }
    }
}
