//! Signing an allowed channel for the caller's socket.
//!
//! Architecture Invariant: the string that is signed is the string that is returned:
//! `channel_data` is serialized once, here, signed, and sent as is.

use porter_core::channel::{Channel, ChannelKind};
use porter_core::policy::{PrivateData, Rule};
use porter_core::reason::Reason;
use porter_core::signing::Signer;
use porter_core::wire::AuthData;
use serde_json::json;

use crate::authorize::outcome::SignedChannel;

/// The member part of `channel_data`: `{"user_id", "user_info"?}`.
fn member_json(data: &AuthData) -> Option<String> {
    let user_id = data.user_id.as_ref()?;
    let mut member = json!({ "user_id": user_id });
    if let Some(info) = &data.user_info {
        member["user_info"] = info.clone();
    }
    Some(member.to_string())
}

/// Signs an allowed channel for this socket. `private_data` is the gateway's default for
/// private channels, which the rule may override.
pub fn sign(
    signer: &Signer,
    private_data: PrivateData,
    socket_id: &str,
    channel: &Channel<'_>,
    rule: &Rule,
    data: AuthData,
) -> Result<SignedChannel, Reason> {
    let (channel_data, events) = if channel.kind == ChannelKind::Presence {
        (
            Some(member_json(&data).ok_or(Reason::Unauthenticated)?),
            None,
        )
    } else {
        match rule.private_data.unwrap_or(private_data) {
            PrivateData::Signed => {
                let signed = member_json(&data).or_else(|| {
                    (!data.events.is_empty()).then(|| json!({ "events": data.events }).to_string())
                });
                (signed, None)
            }
            PrivateData::Events => (None, (!data.events.is_empty()).then_some(data.events)),
        }
    };
    let auth = signer
        .sign_channel(socket_id, channel.name, channel_data.as_deref())
        .map_err(|_| Reason::EncryptionNotConfigured)?;
    Ok(SignedChannel {
        auth: auth.auth,
        channel_data: auth.channel_data,
        shared_secret: auth.shared_secret,
        events,
    })
}
