//! The token keys of the policy's scoped-token endpoints (`[[endpoint]]`), read once at
//! start-up: HS256 secrets named by each endpoint's `secret_env`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use porter_core::policy::Policy;
use serde_json::{Map, Value};
use tracing::warn;

/// The verification keys of the policy's endpoints, by endpoint index.
#[derive(Default)]
pub struct ScopedKeys {
    keys: Vec<Option<DecodingKey>>,
}

impl ScopedKeys {
    /// Reads each endpoint's secret through `secret_of(env name)`. An endpoint without a
    /// secret refuses every token (and says so in the log once, here).
    pub fn new(policy: &Policy, secret_of: impl Fn(&str) -> Option<String>) -> ScopedKeys {
        let keys = policy
            .endpoints()
            .iter()
            .map(|endpoint| {
                let secret = secret_of(&endpoint.secret_env).filter(|s| !s.is_empty());
                if secret.is_none() {
                    warn!(path = %endpoint.path, env = %endpoint.secret_env, "scoped endpoint has no token secret; it refuses every token");
                }
                secret.map(|s| DecodingKey::from_secret(s.as_bytes()))
            })
            .collect();
        ScopedKeys { keys }
    }

    /// The claims of a token the endpoint's key signed and that has not expired.
    pub fn verify(&self, index: usize, token: &str) -> Option<Map<String, Value>> {
        let key = self.keys.get(index)?.as_ref()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_a_secret_accepts_no_token() {
        let policy = Policy::from_toml(
            "[[rule]]\nname = \"g\"\npattern = \"private-g-{id}\"\nallow = { claims = { id = \"id\" } }\n[[endpoint]]\npath = \"/g\"\ntoken = { query = \"t\", secret_env = \"G_SECRET\" }\nrules = \"g\"\n",
        )
        .unwrap();
        let claims = serde_json::json!({ "id": "1", "exp": 4_000_000_000u64 });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        let without = ScopedKeys::new(&policy, |_| None);
        assert!(without.verify(0, &token).is_none());
        let with = ScopedKeys::new(&policy, |name| (name == "G_SECRET").then(|| "s".to_owned()));
        assert_eq!(with.verify(0, &token).unwrap()["id"], "1");
        assert!(with.verify(1, &token).is_none(), "no such endpoint");
        let other = ScopedKeys::new(&policy, |_| Some("other".to_owned()));
        assert!(other.verify(0, &token).is_none());
    }
}
