//! Pusher signatures: channel auth, presence `channel_data`, encrypted channels' shared
//! secret, user authentication and webhook verification.
//!
//! The official server SDKs are the oracle (`shared/vectors/pusher_auth.json`). The string
//! that is signed is the string that is returned: `channel_data` is taken as the caller's
//! exact bytes and never re-serialized.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// A configuration problem with the Pusher credentials, found at start-up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("the encryption master key is not valid base64")]
    MasterKeyNotBase64,
    #[error("the encryption master key must decode to exactly 32 bytes, got {0}")]
    MasterKeyLength(usize),
}

/// A signing request that cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SigningError {
    #[error("encrypted channels need an encryption master key, and none is configured")]
    NoMasterKey,
}

/// A secret value: compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality with a candidate, e.g. an admin token from a request.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The Pusher app credentials, with the HMAC keyed once.
#[derive(Clone)]
pub struct Signer {
    app_id: String,
    key: String,
    mac: HmacSha256,
    master_key: Option<[u8; 32]>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("master_key", &self.master_key.map(|_| "<redacted>"))
            .finish()
    }
}

/// What the official SDKs return for a channel subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelAuth {
    pub auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
}

/// What the official SDKs return for user authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserAuth {
    pub auth: String,
    pub user_data: String,
}

impl Signer {
    /// Builds a signer. The master key, when given, is base64 of exactly 32 bytes.
    pub fn new(
        app_id: &str,
        key: &str,
        secret: &Secret,
        master_key_base64: Option<&str>,
    ) -> Result<Signer, CredentialsError> {
        if app_id.is_empty() {
            return Err(CredentialsError::Empty("app id"));
        }
        if key.is_empty() {
            return Err(CredentialsError::Empty("key"));
        }
        if secret.expose().is_empty() {
            return Err(CredentialsError::Empty("secret"));
        }
        let master_key = master_key_base64
            .filter(|encoded| !encoded.trim().is_empty())
            .map(|encoded| {
                let bytes = BASE64
                    .decode(encoded.trim())
                    .map_err(|_| CredentialsError::MasterKeyNotBase64)?;
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| CredentialsError::MasterKeyLength(bytes.len()))
            })
            .transpose()?;
        let mac = HmacSha256::new_from_slice(secret.expose())
            .map_err(|_| CredentialsError::Empty("secret"))?;
        Ok(Signer {
            app_id: app_id.to_owned(),
            key: key.to_owned(),
            mac,
            master_key,
        })
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn has_master_key(&self) -> bool {
        self.master_key.is_some()
    }

    /// Lower-case hex of the HMAC of `parts`, written into `out`. Into a buffer on the stack:
    /// `hex::encode` builds its `String` one `char` at a time, which cost more than the two
    /// SHA-256 blocks of a short signature (docs/benchmarks.md, "Gateway per-request cost").
    fn hex_hmac_into<'b>(&self, parts: &[&[u8]], out: &'b mut [u8; 64]) -> &'b str {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        // Neither can fail: 32 bytes are exactly 64 hex digits, and hex digits are ASCII. A
        // panic, not an empty signature, if that ever stopped being true.
        hex::encode_to_slice(mac.finalize().into_bytes(), out)
            .expect("an HMAC-SHA256 is 32 bytes, 64 hex digits");
        std::str::from_utf8(out).expect("hex digits are ASCII")
    }

    fn hex_hmac(&self, parts: &[&[u8]]) -> String {
        let mut out = [0u8; 64];
        self.hex_hmac_into(parts, &mut out).to_owned()
    }

    fn key_signature(&self, parts: &[&[u8]]) -> String {
        let mut out = [0u8; 64];
        let signature = self.hex_hmac_into(parts, &mut out);
        let mut auth = String::with_capacity(self.key.len() + 1 + signature.len());
        auth.push_str(&self.key);
        auth.push(':');
        auth.push_str(signature);
        auth
    }

    /// Signs a channel subscription: `socket_id:channel[:channel_data]`.
    ///
    /// Encrypted channels (`private-encrypted-`) also get their `shared_secret`. The caller
    /// validates socket id and channel name first.
    pub fn sign_channel(
        &self,
        socket_id: &str,
        channel: &str,
        channel_data: Option<&str>,
    ) -> Result<ChannelAuth, SigningError> {
        let shared_secret = if channel.starts_with("private-encrypted-") {
            Some(self.shared_secret(channel)?)
        } else {
            None
        };
        let auth = match channel_data {
            Some(data) => self.key_signature(&[
                socket_id.as_bytes(),
                b":",
                channel.as_bytes(),
                b":",
                data.as_bytes(),
            ]),
            None => self.key_signature(&[socket_id.as_bytes(), b":", channel.as_bytes()]),
        };
        Ok(ChannelAuth {
            auth,
            channel_data: channel_data.map(str::to_owned),
            shared_secret,
        })
    }

    /// `base64(SHA-256(channel ‖ master_key))`: the per-channel key of an encrypted channel.
    pub fn shared_secret(&self, channel: &str) -> Result<String, SigningError> {
        let master_key = self.master_key.as_ref().ok_or(SigningError::NoMasterKey)?;
        let mut digest = Sha256::new();
        digest.update(channel.as_bytes());
        digest.update(master_key);
        Ok(BASE64.encode(digest.finalize()))
    }

    /// Signs Pusher user authentication: `socket_id::user::user_data`.
    pub fn sign_user(&self, socket_id: &str, user_data: &str) -> UserAuth {
        UserAuth {
            auth: self.key_signature(&[socket_id.as_bytes(), b"::user::", user_data.as_bytes()]),
            user_data: user_data.to_owned(),
        }
    }

    /// The `X-Pusher-Signature` of a webhook body: hex HMAC-SHA256 of the raw body.
    pub fn webhook_signature(&self, body: &[u8]) -> String {
        self.hex_hmac(&[body])
    }

    /// Checks a webhook's `X-Pusher-Key` and `X-Pusher-Signature` in constant time.
    pub fn verify_webhook(&self, key: &str, signature: &str, body: &[u8]) -> bool {
        let key_ok: bool = key.as_bytes().ct_eq(self.key.as_bytes()).into();
        let expected = self.webhook_signature(body);
        let signature_ok: bool = signature
            .to_ascii_lowercase()
            .as_bytes()
            .ct_eq(expected.as_bytes())
            .into();
        key_ok & signature_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(
            "100000",
            "278d425bdf160c739803",
            &Secret::new("7ad3773142a6692b25b8"),
            Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
        )
        .unwrap()
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let short = Signer::new("1", "k", &Secret::new("s"), Some("AAAA"));
        assert_eq!(short.unwrap_err(), CredentialsError::MasterKeyLength(3));
        let garbage = Signer::new("1", "k", &Secret::new("s"), Some("!!"));
        assert_eq!(garbage.unwrap_err(), CredentialsError::MasterKeyNotBase64);
        assert!(Signer::new("1", "k", &Secret::new("s"), None).is_ok());
    }

    #[test]
    fn encrypted_channel_without_master_key_is_an_error() {
        let signer = Signer::new("1", "k", &Secret::new("s"), None).unwrap();
        assert_eq!(
            signer.sign_channel("1.1", "private-encrypted-x", None),
            Err(SigningError::NoMasterKey)
        );
    }

    #[test]
    fn webhook_check_rejects_wrong_key_and_signature() {
        let s = signer();
        let body = b"{}";
        let good = s.webhook_signature(body);
        assert!(s.verify_webhook(s.key(), &good, body));
        assert!(s.verify_webhook(s.key(), &good.to_uppercase(), body));
        assert!(!s.verify_webhook("other", &good, body));
        assert!(!s.verify_webhook(s.key(), &good[1..], body));
        assert!(!s.verify_webhook(s.key(), &good, b"{ }"));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let printed = format!("{:?} {:?}", signer(), Secret::new("7ad3773142a6692b25b8"));
        assert!(!printed.contains("7ad3773142a6692b25b8"));
        assert!(!printed.contains("BwcH"));
    }

    #[test]
    fn secret_matches_in_constant_time() {
        let s = Secret::new("token");
        assert!(s.matches(b"token"));
        assert!(!s.matches(b"token2"));
        assert!(!s.matches(b""));
    }
}
