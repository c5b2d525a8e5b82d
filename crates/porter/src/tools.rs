//! The by-hand tools: `porter sign`, `porter token`, `porter policy`.

use std::path::Path;

use anyhow::{Context, bail};
use porter_core::channel::{Channel, validate_socket_id};
use porter_core::policy::{Policy, PrivateData};
use porter_core::signing::{Secret, Signer};
use serde_json::{Map, Value};

use crate::cli::{Credentials, GuestTokenArgs, SignArgs, TokenArgs, TokenKind};

/// Builds the signer; a bad master key is a start-up error.
pub fn signer(credentials: &Credentials) -> anyhow::Result<Signer> {
    let key = credentials
        .key
        .as_deref()
        .context("PUSHER_KEY (or --key) is required")?;
    let secret = credentials
        .secret
        .as_deref()
        .context("PUSHER_SECRET (or --secret) is required")?;
    Signer::new(
        &credentials.app_id,
        key,
        &Secret::new(secret),
        credentials.master_key.as_deref(),
    )
    .context("invalid Pusher credentials")
}

/// Loads a policy file, or the built-in policy: the one loader of `porter policy`, the gateway,
/// the worker and `porter dev`, so a policy refused by `porter policy check` (exit 2, one line
/// naming the rule, the field and the reason) is refused at start-up everywhere.
pub fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(path) => {
            // The path is quoted with its control characters escaped: errors are one line.
            let shown = path.display().to_string().escape_debug().to_string();
            let source =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
            Policy::from_toml(&source).with_context(|| shown)
        }
    }
}

pub fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let signer = signer(&args.credentials)?;
    validate_socket_id(&args.socket_id).context("invalid --socket-id")?;
    let output = if args.user {
        let user_data = args
            .user_data
            .as_deref()
            .context("--user needs --user-data")?;
        serde_json::to_string(&signer.sign_user(&args.socket_id, user_data))?
    } else {
        let channel = args.channel.as_deref().context("--channel is required")?;
        Channel::parse(channel).with_context(|| format!("invalid channel `{channel}`"))?;
        let auth = signer
            .sign_channel(&args.socket_id, channel, args.channel_data.as_deref())
            .context("cannot sign")?;
        serde_json::to_string(&auth)?
    };
    println!("{output}");
    Ok(())
}

pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    if let Some(TokenKind::Guest(guest)) = &args.kind {
        return guest_token(guest);
    }
    let jwt_secret = args.jwt_secret.as_deref().unwrap_or_default();
    if jwt_secret.is_empty() {
        bail!("PORTER_JWT_SECRET (or --jwt-secret) must not be empty");
    }
    let sub = args.sub.as_deref().context("--sub is required")?;
    let mut claims = Map::new();
    for pair in &args.claims {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--claim `{pair}` is not KEY=VALUE"))?;
        if key.is_empty() {
            bail!("--claim `{pair}` has an empty key");
        }
        claims.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    claims.insert("sub".into(), Value::String(sub.to_owned()));
    if let Some(name) = &args.name {
        claims.insert("name".into(), Value::String(name.clone()));
    }
    if let Some(email) = &args.email {
        claims.insert("email".into(), Value::String(email.clone()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + args.ttl).into());
    println!("{}", mint(&claims, jwt_secret.as_bytes())?);
    Ok(())
}

/// `porter token guest`: the scoped token of the hotel guest chat.
pub fn guest_token(args: &GuestTokenArgs) -> anyhow::Result<()> {
    if args.secret.is_empty() {
        bail!("PORTER_GUEST_TOKEN_SECRET (or --secret) must not be empty");
    }
    if args.hotel.is_empty() || args.booking.is_empty() {
        bail!("--hotel and --booking must not be empty");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = Map::new();
    claims.insert("hotel".into(), Value::String(args.hotel.clone()));
    claims.insert("booking_id".into(), Value::String(args.booking.clone()));
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + args.ttl).into());
    println!("{}", mint(&claims, args.secret.as_bytes())?);
    Ok(())
}

/// Signs claims as an HS256 JWT.
pub fn mint(claims: &Map<String, Value>, secret: &[u8]) -> anyhow::Result<String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .context("cannot sign the token")
}

/// `sign_private_data`: the gateway's `PORTER_SIGN_PRIVATE_DATA`, which rules without their
/// own `private_data` follow.
pub fn policy_check(file: &Path, sign_private_data: bool) -> anyhow::Result<()> {
    let policy = load_policy(Some(file))?;
    println!(
        "{}: {} rules, {} endpoints, valid",
        file.display(),
        policy.rules().len(),
        policy.endpoints().len()
    );
    for (_, line) in private_data_compatibility(&policy, private_data_default(sign_private_data)) {
        println!("{line}");
    }
    match policy.signin() {
        Some(signin) => println!("{signin}"),
        None => println!(
            "signin:      off (no [signin] section): POST /pusher/user-auth answers 403 signin_not_configured"
        ),
    }
    Ok(())
}

/// The gateway's default for private channels' data (`PORTER_SIGN_PRIVATE_DATA`).
pub fn private_data_default(sign_private_data: bool) -> PrivateData {
    if sign_private_data {
        PrivateData::Signed
    } else {
        PrivateData::Events
    }
}

/// Which Pusher-protocol servers the policy's private channels work with, one line per
/// setting in use: said by `porter policy check` and logged by the gateway at start.
pub fn private_data_compatibility(
    policy: &Policy,
    default: PrivateData,
) -> Vec<(PrivateData, String)> {
    let mut lines = Vec::new();
    for setting in [PrivateData::Events, PrivateData::Signed] {
        let rules: Vec<String> = policy
            .rules()
            .iter()
            .filter(|rule| rule.private_data_under(default) == Some(setting))
            .map(|rule| format!("`{}`", rule.name))
            .collect();
        if rules.is_empty() {
            continue;
        }
        let how = match setting {
            PrivateData::Events => "carry data in an unsigned `events` field",
            PrivateData::Signed => "sign their data into `channel_data`",
        };
        let mut line = format!(
            "private channels of {} {how}: works with {}",
            rules.join(", "),
            setting.accepted_by()
        );
        if setting == PrivateData::Signed {
            line.push_str(
                "; private_data = \"events\" (and PORTER_SIGN_PRIVATE_DATA off) works with every server",
            );
        }
        lines.push((setting, line));
    }
    lines
}

pub fn policy_explain(channel: &str, policy: Option<&Path>) -> anyhow::Result<()> {
    let policy = load_policy(policy)?;
    let matched = policy
        .match_name(channel)
        .map_err(|e| anyhow::anyhow!("{channel}: {e} (reason `{}`)", e.reason()))?;
    println!("channel:     {channel}");
    println!("{matched}");
    for endpoint in policy
        .endpoints()
        .iter()
        .filter(|e| e.rules.contains(&matched.rule.name))
    {
        println!(
            "served by:   POST {} only (token from `{}`, secret in {})",
            endpoint.path, endpoint.token_query, endpoint.secret_env
        );
    }
    Ok(())
}
