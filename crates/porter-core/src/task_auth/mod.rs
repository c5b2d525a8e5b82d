//! Authenticated tasks and replies: HMAC-SHA256 under a key that gateways and workers share
//! (never the Pusher secret), so that a broker user who can publish to a task queue or to a
//! gateway's reply queue can neither have a task run nor answer one.
//!
//! A message is signed over its body and every property its receiver acts on (a task's
//! correlation id, `reply_to`, `expiration`, deadline and time limit; a reply's correlation
//! id), under a domain tag that keeps a task's signature from passing for a reply's. The
//! signature travels in the AMQP header [`HEADER_SIGNATURE`] as `<key-id>:<64 hex>`; the key id
//! (a short hash of the key) picks the one key to verify with, so verification never tries
//! keys blindly. The first key of the list signs and every key verifies: that is rotation.
//!
//! [`Mode`] is the rolling-upgrade switch: `off` (no keys: nothing signed or checked),
//! `accept` (sign, verify what is signed, let unsigned messages through) and `require`
//! (refuse unsigned ones). The exact bytes signed are in `docs/task-auth.md`.
//!
//! Pure: the transport reads headers and files, this module only computes and compares.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The AMQP header that carries a message's signature, `<key-id>:<hex>`.
pub const HEADER_SIGNATURE: &str = "x-porter-signature";

/// The shortest key accepted, in bytes: 128 bits of hex (`openssl rand -hex 16`) at least.
pub const MIN_KEY_BYTES: usize = 32;

/// Hex digits of a key id (the first bytes of a hash of the key).
const KEY_ID_HEX: usize = 8;

const TASK_DOMAIN: &[u8] = b"porter task v1\n";
const REPLY_DOMAIN: &[u8] = b"porter reply v1\n";
const KEY_ID_DOMAIN: &[u8] = b"porter task key id\n";

/// How a process treats task and reply signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing is signed or checked (no keys configured: the behaviour before signing).
    Off,
    /// Outgoing messages are signed; signed incoming ones must verify; unsigned ones pass
    /// (the first step of a rollout, while some processes do not sign yet).
    Accept,
    /// Outgoing messages are signed; incoming ones must be signed and verify.
    Require,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Accept => "accept",
            Mode::Require => "require",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = TaskAuthError;

    fn from_str(text: &str) -> Result<Mode, TaskAuthError> {
        match text.trim() {
            "off" => Ok(Mode::Off),
            "accept" => Ok(Mode::Accept),
            "require" => Ok(Mode::Require),
            other => Err(TaskAuthError::UnknownMode(other.to_owned())),
        }
    }
}

/// A bad task authentication setting, found at start-up. Never carries key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskAuthError {
    #[error("unknown task authentication mode `{0}`; use off, accept or require")]
    UnknownMode(String),
    #[error("the task key list holds no key")]
    NoKeys,
    #[error(
        "task key {position} is {len} bytes; a task key must be at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)"
    )]
    KeyTooShort { position: usize, len: usize },
    #[error("task keys {first} and {second} are the same key")]
    DuplicateKey { first: usize, second: usize },
    #[error("task keys {first} and {second} have the same key id; replace one of them")]
    KeyIdCollision { first: usize, second: usize },
    #[error("task key {position} cannot key HMAC-SHA256")]
    Unusable { position: usize },
    #[error("task authentication `{0}` needs task keys")]
    NeedsKeys(Mode),
}

/// Why an incoming message is refused. The codes are stable (logs, metrics).
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum Unauthenticated {
    #[error("unsigned, and task authentication is required")]
    Unsigned,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("signed with a key this process does not hold")]
    UnknownKey,
    #[error("the signature does not match the message")]
    BadSignature,
}

impl Unauthenticated {
    /// A stable code for log lines.
    pub fn code(self) -> &'static str {
        match self {
            Unauthenticated::Unsigned => "unsigned",
            Unauthenticated::Malformed => "malformed_signature",
            Unauthenticated::UnknownKey => "unknown_key",
            Unauthenticated::BadSignature => "bad_signature",
        }
    }
}

/// Why an incoming message was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    /// It carries a signature that verifies under one of the keys.
    Signed,
    /// It is unsigned, and the mode is `accept`.
    UnsignedAccepted,
    /// Nothing was checked: the mode is `off`.
    Unchecked,
}

/// What a task carries that its worker acts on (gateway → worker).
#[derive(Debug, Clone, Copy)]
pub struct TaskMessage<'a> {
    pub correlation_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    /// The AMQP per-message TTL, as sent (milliseconds, decimal).
    pub expiration: Option<&'a str>,
    /// The deadline header as the worker reads it.
    pub deadline_ms: Option<u64>,
    /// The time-limit header as the worker reads it.
    pub time_limit_ms: Option<u64>,
    pub body: &'a [u8],
}

/// What a reply carries that its gateway acts on (worker → gateway).
#[derive(Debug, Clone, Copy)]
pub struct ReplyMessage<'a> {
    /// The task's correlation id: a reply verifies only for the task it answers.
    pub correlation_id: Option<&'a str>,
    pub body: &'a [u8],
}

/// A message to sign or verify.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Task(TaskMessage<'a>),
    Reply(ReplyMessage<'a>),
}

impl Message<'_> {
    /// Feeds the canonical bytes: a domain tag, the key id, then each field with its presence
    /// and length, so no two different messages feed the same bytes.
    fn feed(&self, key_id: &str, mac: &mut HmacSha256) {
        match self {
            Message::Task(task) => {
                mac.update(TASK_DOMAIN);
                mac.update(key_id.as_bytes());
                feed_text(mac, task.correlation_id);
                feed_text(mac, task.reply_to);
                feed_text(mac, task.expiration);
                feed_number(mac, task.deadline_ms);
                feed_number(mac, task.time_limit_ms);
                feed_bytes(mac, task.body);
            }
            Message::Reply(reply) => {
                mac.update(REPLY_DOMAIN);
                mac.update(key_id.as_bytes());
                feed_text(mac, reply.correlation_id);
                feed_bytes(mac, reply.body);
            }
        }
    }
}

fn feed_bytes(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

fn feed_text(mac: &mut HmacSha256, text: Option<&str>) {
    match text {
        None => mac.update(&[0]),
        Some(text) => {
            mac.update(&[1]);
            feed_bytes(mac, text.as_bytes());
        }
    }
}

fn feed_number(mac: &mut HmacSha256, number: Option<u64>) {
    match number {
        None => mac.update(&[0]),
        Some(number) => {
            mac.update(&[1]);
            mac.update(&number.to_be_bytes());
        }
    }
}

/// One key, keyed once: each message clones the prepared MAC instead of re-hashing the key.
struct TaskKey {
    id: String,
    mac: HmacSha256,
}

impl TaskKey {
    /// `None` only if HMAC refused the key, which it does for no length.
    fn new(secret: &[u8]) -> Option<TaskKey> {
        let mac = HmacSha256::new_from_slice(secret).ok()?;
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(secret)
            .finalize();
        let mut id = hex::encode(digest);
        id.truncate(KEY_ID_HEX);
        Some(TaskKey { id, mac })
    }

    fn mac_of(&self, message: &Message<'_>) -> HmacSha256 {
        let mut mac = self.mac.clone();
        message.feed(&self.id, &mut mac);
        mac
    }
}

/// The keys a process holds: the first signs, all verify. Printing shows only key ids.
pub struct TaskKeys {
    keys: Vec<TaskKey>,
}

impl TaskKeys {
    /// Parses a list of keys separated by commas or line breaks (an environment variable or
    /// a file's contents); whitespace around a key and empty entries are ignored. Errors
    /// name keys by position, never by content.
    pub fn parse(list: &str) -> Result<TaskKeys, TaskAuthError> {
        let secrets: Vec<&str> = list
            .split([',', '\n', '\r'])
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(TaskAuthError::NoKeys);
        }
        let mut keys: Vec<TaskKey> = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let position = index + 1;
            if secret.len() < MIN_KEY_BYTES {
                return Err(TaskAuthError::KeyTooShort {
                    position,
                    len: secret.len(),
                });
            }
            if let Some(first) = secrets[..index].iter().position(|s| s == secret) {
                return Err(TaskAuthError::DuplicateKey {
                    first: first + 1,
                    second: position,
                });
            }
            let key =
                TaskKey::new(secret.as_bytes()).ok_or(TaskAuthError::Unusable { position })?;
            if let Some(first) = keys.iter().position(|k| k.id == key.id) {
                return Err(TaskAuthError::KeyIdCollision {
                    first: first + 1,
                    second: position,
                });
            }
            keys.push(key);
        }
        Ok(TaskKeys { keys })
    }

    /// The key ids, the signing key's first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    fn signing(&self) -> &TaskKey {
        // `parse` refuses an empty list.
        &self.keys[0]
    }

    fn by_id(&self, id: &str) -> Option<&TaskKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

impl fmt::Debug for TaskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskKeys")
            .field("ids", &self.ids())
            .finish()
    }
}

/// A process's task authentication: its mode and keys. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TaskAuth {
    mode: Mode,
    /// Present exactly when the mode is not `off`.
    keys: Option<Arc<TaskKeys>>,
}

impl TaskAuth {
    /// Nothing signed, nothing checked.
    pub fn off() -> TaskAuth {
        TaskAuth {
            mode: Mode::Off,
            keys: None,
        }
    }

    /// The settings as configured. Without a mode: `require` with keys, `off` without, so that
    /// configuring keys protects unless a rollout says otherwise. `off` with keys ignores them
    /// (a way back that leaves the secret in place); `accept` and `require` need keys.
    pub fn new(mode: Option<Mode>, keys: Option<TaskKeys>) -> Result<TaskAuth, TaskAuthError> {
        let mode = mode.unwrap_or(if keys.is_some() {
            Mode::Require
        } else {
            Mode::Off
        });
        match (mode, keys) {
            (Mode::Off, _) => Ok(TaskAuth::off()),
            (mode, None) => Err(TaskAuthError::NeedsKeys(mode)),
            (mode, Some(keys)) => Ok(TaskAuth {
                mode,
                keys: Some(Arc::new(keys)),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The id of the key that signs, when anything is signed.
    pub fn signing_key_id(&self) -> Option<&str> {
        self.keys.as_ref().map(|keys| keys.signing().id.as_str())
    }

    /// The value of [`HEADER_SIGNATURE`] for an outgoing message; `None` when the mode is off.
    pub fn sign(&self, message: &Message<'_>) -> Option<String> {
        let key = self.keys.as_ref()?.signing();
        let tag = key.mac_of(message).finalize().into_bytes();
        Some(format!("{}:{}", key.id, hex::encode(tag)))
    }

    /// Checks an incoming message against its [`HEADER_SIGNATURE`] value (`None`: the header
    /// is absent). A present signature must verify in `accept` mode too: only a missing one is
    /// let through there. The comparison is constant-time.
    pub fn verify(
        &self,
        message: &Message<'_>,
        signature: Option<&[u8]>,
    ) -> Result<Authenticity, Unauthenticated> {
        let Some(keys) = &self.keys else {
            return Ok(Authenticity::Unchecked);
        };
        let Some(signature) = signature else {
            return match self.mode {
                Mode::Accept => Ok(Authenticity::UnsignedAccepted),
                Mode::Off | Mode::Require => Err(Unauthenticated::Unsigned),
            };
        };
        let (id, tag) = parse_signature(signature)?;
        let key = keys.by_id(id).ok_or(Unauthenticated::UnknownKey)?;
        key.mac_of(message)
            .verify_slice(&tag)
            .map(|()| Authenticity::Signed)
            .map_err(|_| Unauthenticated::BadSignature)
    }
}

/// Splits `<key-id>:<hex>` and decodes the tag.
fn parse_signature(signature: &[u8]) -> Result<(&str, Vec<u8>), Unauthenticated> {
    let text = std::str::from_utf8(signature).map_err(|_| Unauthenticated::Malformed)?;
    let (id, tag) = text.split_once(':').ok_or(Unauthenticated::Malformed)?;
    if id.len() != KEY_ID_HEX || tag.len() != 64 {
        return Err(Unauthenticated::Malformed);
    }
    let tag = hex::decode(tag).map_err(|_| Unauthenticated::Malformed)?;
    Ok((id, tag))
}

#[cfg(test)]
mod tests;
