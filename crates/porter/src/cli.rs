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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    /// Other kinds of token (`porter token guest …`).
    #[command(subcommand)]
    pub kind: Option<TokenKind>,
    /// The user id (`sub`).
    #[arg(long, required = true)]
    pub sub: Option<String>,
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
    #[arg(
        long,
        env = "PORTER_JWT_SECRET",
        hide_env_values = true,
        required = true
    )]
    pub jwt_secret: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TokenKind {
    /// Mint a scoped guest token (seed 003): HS256 with claims `hotel`, `booking_id`, `exp`.
    Guest(GuestTokenArgs),
}

#[derive(Args, Debug)]
pub struct GuestTokenArgs {
    /// The hotel slug the token is good for (claim `hotel`).
    #[arg(long)]
    pub hotel: String,
    /// The booking id (claim `booking_id`).
    #[arg(long)]
    pub booking: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86400)]
    pub ttl: u64,
    /// The secret of the guest chat endpoint (`secret_env` of its `[[endpoint]]`).
    #[arg(long, env = "PORTER_GUEST_TOKEN_SECRET", hide_env_values = true)]
    pub secret: String,
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
