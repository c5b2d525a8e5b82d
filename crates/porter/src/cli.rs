//! Command-line arguments. Every setting can also come from the environment variable named
//! next to it, which is how the deployment files configure Porter.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "porter",
    version,
    about = "Authorizes Pusher-protocol channel subscriptions at scale"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Sign a channel subscription or a user authentication, as the official SDKs do.
    Sign(SignArgs),
    /// Mint an HS256 token for trying the API by hand.
    Token(TokenArgs),
    /// Check or explain a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Serve the HTTP API, fanning tasks out over RabbitMQ.
    Gateway(GatewayArgs),
    /// Consume authorization tasks from RabbitMQ.
    Worker(WorkerArgs),
    /// Gateway and workers in one process, in memory, with demo data.
    Dev(DevArgs),
    /// Load-test a running gateway.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and validate a policy file.
    Check { file: PathBuf },
    /// Show which rule a channel matches and what it decides.
    Explain {
        channel: String,
        /// A policy file; the built-in policy otherwise.
        #[arg(long, env = "PORTER_POLICY")]
        policy: Option<PathBuf>,
    },
}

/// The Pusher app credentials (seed names).
#[derive(Args, Debug, Clone)]
pub struct Credentials {
    #[arg(long, env = "PUSHER_APP_ID", default_value = "100000")]
    pub app_id: String,
    #[arg(long, env = "PUSHER_KEY")]
    pub key: Option<String>,
    #[arg(long, env = "PUSHER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(
        long = "encryption-master-key-base64",
        env = "PUSHER_ENCRYPTION_MASTER_KEY_BASE64",
        hide_env_values = true
    )]
    pub master_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    #[command(flatten)]
    pub credentials: Credentials,
    #[arg(long)]
    pub socket_id: String,
    /// The channel to sign (not with --user).
    #[arg(long, required_unless_present = "user", conflicts_with = "user")]
    pub channel: Option<String>,
    /// The exact `channel_data` string to sign in (presence member data).
    #[arg(long, conflicts_with = "user")]
    pub channel_data: Option<String>,
    /// Sign user authentication (`socket_id::user::user_data`) instead.
    #[arg(long, requires = "user_data")]
    pub user: bool,
    #[arg(long)]
    pub user_data: Option<String>,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// Extra claims, `KEY=VALUE` (repeatable).
    #[arg(long = "claim", value_name = "KEY=VALUE")]
    pub claims: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    #[arg(long, env = "PORTER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// Settings shared by gateway and worker.
#[derive(Args, Debug, Clone)]
pub struct Backends {
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// Prepended to the queue names `auth` and `auth/high`.
    #[arg(long, env = "PORTER_QUEUE_PREFIX", default_value = "")]
    pub queue_prefix: String,
    /// Prepended to Redis keys (seed 000's names by default).
    #[arg(long, env = "PORTER_KEY_PREFIX", default_value = "ext.pusher:")]
    pub key_prefix: String,
    /// A policy file; the built-in policy (seed 000) otherwise.
    #[arg(long, env = "PORTER_POLICY")]
    pub policy: Option<PathBuf>,
}

/// Settings of the HTTP side.
#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    #[command(flatten)]
    pub credentials: Credentials,
    #[arg(long, env = "PORTER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Channels one request may ask for.
    #[arg(long, env = "PORTER_MAX_CHANNELS", default_value_t = 100)]
    pub max_channels: usize,
    /// Milliseconds added to a batch's largest `expires` before unanswered channels time out.
    #[arg(long, env = "PORTER_GRACE_MS", default_value_t = 250)]
    pub grace_ms: u64,
    /// Sign private channels' data into `channel_data` (seed 000) instead of `events`.
    #[arg(long, env = "PORTER_SIGN_PRIVATE_DATA")]
    pub sign_private_data: bool,
    /// Bearer token of the admin API; without it the admin API is disabled.
    #[arg(long, env = "PORTER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "PORTER_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    #[command(flatten)]
    pub identity: Box<IdentityArgs>,
}

/// Token verification (besides `PORTER_JWT_SECRET`), sessions and revocation.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// A JWKS for RS256/ES256 tokens: a file path or an http(s) URL.
    #[arg(long, env = "PORTER_JWKS")]
    pub jwks: Option<String>,
    /// The required `iss` of tokens.
    #[arg(long, env = "PORTER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; tokens must carry one when set.
    #[arg(long, env = "PORTER_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "PORTER_JWT_LEEWAY", default_value_t = 5)]
    pub jwt_leeway: u64,
    /// Allowed token algorithms, comma-separated (default: HS256 with a secret, RS256 and
    /// ES256 with a JWKS). `none` is never allowed.
    #[arg(long, env = "PORTER_JWT_ALGORITHMS", value_delimiter = ',')]
    pub jwt_algorithms: Vec<String>,
    /// Least seconds between two JWKS refreshes caused by an unknown `kid`.
    #[arg(long, env = "PORTER_JWKS_REFRESH_INTERVAL", default_value_t = 60)]
    pub jwks_refresh_interval: u64,
    /// Seconds after which the cached JWKS is read again.
    #[arg(long, env = "PORTER_JWKS_MAX_AGE", default_value_t = 3600)]
    pub jwks_max_age: u64,
    /// Seconds a session lives after its last use (sliding).
    #[arg(long, env = "PORTER_SESSION_TTL", default_value_t = 3600)]
    pub session_ttl: u64,
    /// Seconds a revoked `jti` stays revoked when the revocation gives no `exp`.
    #[arg(long, env = "PORTER_REVOCATION_TTL", default_value_t = 86400)]
    pub revocation_ttl: u64,
}

impl Default for IdentityArgs {
    /// The same defaults as the flags (for `porter dev`).
    fn default() -> IdentityArgs {
        IdentityArgs {
            jwks: None,
            jwt_issuer: None,
            jwt_audience: Vec::new(),
            jwt_leeway: 5,
            jwt_algorithms: Vec::new(),
            jwks_refresh_interval: 60,
            jwks_max_age: 3600,
            session_ttl: 3600,
            revocation_ttl: 86400,
        }
    }
}

#[derive(Args, Debug)]
pub struct GatewayArgs {
    #[arg(long, env = "PORTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub backends: Backends,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub backends: Backends,
    /// Queues to consume, comma-separated.
    #[arg(
        long,
        env = "PORTER_QUEUES",
        default_value = "auth,auth/high",
        value_delimiter = ','
    )]
    pub queues: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "PORTER_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Unacknowledged tasks the broker may hand this worker per queue.
    #[arg(long, env = "PORTER_PREFETCH", default_value_t = 128)]
    pub prefetch: u16,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Worker loops in the process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, env = "PORTER_POLICY")]
    pub policy: Option<PathBuf>,
}
