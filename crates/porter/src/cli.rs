//! Command-line arguments. Every setting can also come from the environment variable named
//! next to it, which is how the deployment files configure Porter.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use porter_broker::amqp::ReplyMode;

use crate::concealed::Concealed;

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

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Parse and validate a policy file, and say which Pusher-protocol servers its private
    /// channels work with.
    Check {
        file: PathBuf,
        /// As the gateway's flag: rules without `private_data` sign their data into
        /// `channel_data`.
        #[arg(long, env = "PORTER_SIGN_PRIVATE_DATA")]
        sign_private_data: bool,
    },
    /// Show which rule a channel matches and what it decides.
    Explain {
        channel: String,
        /// A policy file; the built-in policy otherwise.
        #[arg(long, env = "PORTER_POLICY")]
        policy: Option<PathBuf>,
    },
}

/// The Pusher app credentials, named as in the system Porter replaces.
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
    /// Mint a scoped token for the hotel guest chat: HS256 with claims `hotel`, `booking_id`,
    /// `exp`.
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
    /// One Redis (`redis://[user:password@]host:port/db`) or a Redis Cluster
    /// (`redis+cluster://host1:port1,host2:port2,...`, credentials before the first host).
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
    /// The task queues' type: `classic` (one node) or `quorum` (a cluster: replicated, with a
    /// delivery limit). Gateways and workers of one deployment must agree (docs/scaling.md).
    #[arg(long, env = "PORTER_QUEUE_TYPE", default_value = "classic")]
    pub queue_type: String,
    /// Prepended to Redis keys (by default the names of the system Porter replaces).
    #[arg(long, env = "PORTER_KEY_PREFIX", default_value = "ext.pusher:")]
    pub key_prefix: String,
    /// A policy file; the built-in policy (the replaced system's catalogue) otherwise.
    #[arg(long, env = "PORTER_POLICY")]
    pub policy: Option<PathBuf>,
    /// Keys that sign and verify tasks and replies, shared by gateways and workers (never the
    /// Pusher secret), comma-separated: the first signs, all verify. Each at least 32 bytes.
    /// Prefer the environment or --task-keys-file: a flag shows in `ps` (docs/task-auth.md).
    #[arg(long, env = "PORTER_TASK_KEYS", hide_env_values = true)]
    pub task_keys: Option<Concealed>,
    /// A file of task keys, one per line or comma-separated (a mounted secret).
    #[arg(long, env = "PORTER_TASK_KEYS_FILE")]
    pub task_keys_file: Option<PathBuf>,
    /// `off`, `accept` (sign, verify what is signed, let unsigned through: a rollout's first
    /// step) or `require`. Default: `require` with task keys, `off` without.
    #[arg(long, env = "PORTER_TASK_AUTH")]
    pub task_auth: Option<String>,
}

#[cfg(test)]
mod task_auth_args_tests {
    use super::*;

    #[test]
    fn task_keys_come_from_flags_or_the_environment_and_never_print() {
        let key = "a-task-key-that-must-never-be-printed";
        let cli = Cli::try_parse_from([
            "porter",
            "worker",
            "--task-keys",
            key,
            "--task-auth",
            "accept",
        ])
        .expect("parses");
        let Command::Worker(args) = cli.command else {
            panic!("a worker");
        };
        assert_eq!(
            args.backends.task_keys.as_ref().map(Concealed::expose),
            Some(key)
        );
        assert_eq!(args.backends.task_auth.as_deref(), Some("accept"));
        let printed = format!("{args:?}");
        assert!(!printed.contains(key), "{printed}");
        assert!(printed.contains("<concealed>"), "{printed}");
    }

    #[test]
    fn the_events_workers_upstream_secret_never_prints() {
        let secret = "an-upstream-secret-that-must-never-be-printed";
        let cli = Cli::try_parse_from([
            "porter",
            "worker",
            "--events",
            "--upstream-key",
            "k",
            "--upstream-secret",
            secret,
        ])
        .expect("parses");
        let Command::Worker(args) = cli.command else {
            panic!("a worker");
        };
        assert_eq!(
            args.events_settings.secret.as_ref().map(Concealed::expose),
            Some(secret)
        );
        let printed = format!("{args:?}");
        assert!(!printed.contains(secret), "{printed}");
        assert!(printed.contains("<concealed>"), "{printed}");
    }
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
    /// Sign private channels' data into `channel_data` (as the replaced system did) instead of
    /// `events`.
    #[arg(long, env = "PORTER_SIGN_PRIVATE_DATA")]
    pub sign_private_data: bool,
    /// Bearer token of the admin API; without it the admin API is disabled.
    #[arg(long, env = "PORTER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "PORTER_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    #[command(flatten)]
    pub protection: ProtectionArgs,
    #[command(flatten)]
    pub identity: Box<IdentityArgs>,
}

/// Token verification (besides `PORTER_JWT_SECRET`), sessions and revocation.
#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// A JWKS for RS256/ES256 tokens: a file path or an https URL (plain http only to loopback).
    #[arg(long, env = "PORTER_JWKS")]
    pub jwks: Option<String>,
    /// The required `iss` of tokens.
    #[arg(long, env = "PORTER_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated; tokens must carry one when set.
    #[arg(long, env = "PORTER_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf` (at most a day: a leeway past the
    /// Unix time would make "now - leeway" underflow in the token check).
    #[arg(long, env = "PORTER_JWT_LEEWAY", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
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
    /// Where workers reply: `exclusive` (a reply queue per gateway) or `direct` (RabbitMQ's
    /// direct reply-to).
    #[arg(long, env = "PORTER_REPLY_MODE", default_value = "exclusive")]
    pub reply_mode: ReplyMode,
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
    /// Runtime threads (0: one per core). Workers scale by process (one per core or pod): a
    /// single thread runs the consumer, the tasks and the Redis client with no hand-offs
    /// between threads, and measured 10-14 % faster than one per core (docs/benchmarks.md).
    #[arg(long, env = "PORTER_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Unacknowledged tasks the broker may hand this worker per queue.
    #[arg(long, env = "PORTER_PREFETCH", default_value_t = 128)]
    pub prefetch: u16,
    /// Serve /healthz, /readyz and /metrics on this IP:PORT (e.g. 0.0.0.0:9090). Off unless
    /// set: several workers often share a host, one per core, and a fixed port would collide.
    #[arg(long, env = "PORTER_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Consume the events queue (`{prefix}events`) instead of the task queues: apply
    /// published events (retained state, the owner's sessions, the upstream servers). A
    /// separate worker, because only one that forwards upstream holds the Pusher secret
    /// (docs/publishing.md).
    #[arg(long, env = "PORTER_EVENTS")]
    pub events: bool,
    #[command(flatten)]
    pub events_settings: crate::events_worker::EventsArgs,
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
    /// Where published events are forwarded (optional in dev: an upstream URL with the demo
    /// credentials).
    #[arg(long, env = "PORTER_UPSTREAM_URL", value_name = "URLS")]
    pub upstream_url: Option<String>,
    /// Rate limits (counted in memory), CORS and presence settings, as for the gateway.
    #[command(flatten)]
    pub protection: ProtectionArgs,
}

/// Abuse protection and presence settings of the HTTP side. The defaults limit nothing that
/// ordinary traffic does: rate limits and CORS are off until configured.
#[derive(Args, Debug, Clone)]
pub struct ProtectionArgs {
    /// Requests per authenticated user, `COUNT/PERIOD` (`20/s`, `600/m`); off when unset,
    /// empty or `off`.
    #[arg(long, env = "PORTER_RATE_LIMIT_USER")]
    pub rate_limit_user: Option<OrOff<porter_store::Quota>>,
    /// Requests per `X-Client-ID`, `COUNT/PERIOD`; off when unset.
    #[arg(long, env = "PORTER_RATE_LIMIT_CLIENT")]
    pub rate_limit_client: Option<OrOff<porter_store::Quota>>,
    /// Requests per client IP, `COUNT/PERIOD`; off when unset.
    #[arg(long, env = "PORTER_RATE_LIMIT_IP")]
    pub rate_limit_ip: Option<OrOff<porter_store::Quota>>,
    /// Proxies whose `X-Forwarded-For` is believed, comma-separated addresses or CIDRs.
    #[arg(long, env = "PORTER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<OrOff<porter_gateway::http::client::ProxyNet>>,
    /// Channel tasks this gateway may have in flight; past it requests get 503 (0: no cap).
    #[arg(long, env = "PORTER_MAX_TASKS_IN_FLIGHT", default_value_t = 20_000)]
    pub max_tasks_in_flight: usize,
    /// Total bytes of request headers; larger requests get 431.
    #[arg(long, env = "PORTER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Origins allowed by CORS, comma-separated (`*` = any); CORS is off when empty.
    #[arg(long, env = "PORTER_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Seconds a heartbeat keeps a user online.
    #[arg(long, env = "PORTER_PRESENCE_TTL", default_value_t = 60)]
    pub presence_ttl: u64,
    /// Seconds a webhook's `time_ms` may be off from now before it is refused as a replay.
    #[arg(long, env = "PORTER_WEBHOOK_MAX_AGE", default_value_t = 300)]
    pub webhook_max_age: u64,
    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// Time and connection bounds of the HTTP edge (`porter_gateway::http::limits::EdgeLimits`).
/// Each is bounded so that no value can disable it or overflow a clock.
#[derive(Args, Debug, Clone)]
pub struct EdgeArgs {
    /// Milliseconds from a request's head to the last byte of its body; past it 408.
    #[arg(
        long,
        env = "PORTER_BODY_TIMEOUT_MS",
        default_value_t = EdgeArgs::default().body_timeout_ms,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub body_timeout_ms: u64,
    /// Milliseconds a connection may take to send a complete request head; past it 408.
    #[arg(
        long,
        env = "PORTER_HEAD_TIMEOUT_MS",
        default_value_t = EdgeArgs::default().head_timeout_ms,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub head_timeout_ms: u64,
    /// Milliseconds a closing connection waits for the client to shut down (0: none).
    #[arg(
        long,
        env = "PORTER_DISCONNECT_TIMEOUT_MS",
        default_value_t = EdgeArgs::default().disconnect_timeout_ms,
        value_parser = clap::value_parser!(u64).range(0..=3_600_000)
    )]
    pub disconnect_timeout_ms: u64,
    /// Connections each HTTP worker thread serves at once; more wait to be accepted.
    #[arg(
        long,
        env = "PORTER_MAX_CONNECTIONS",
        default_value_t = EdgeArgs::default().max_connections,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub max_connections: u32,
}

impl Default for EdgeArgs {
    fn default() -> EdgeArgs {
        EdgeArgs::from(porter_gateway::http::limits::EdgeLimits::default())
    }
}

impl From<porter_gateway::http::limits::EdgeLimits> for EdgeArgs {
    fn from(limits: porter_gateway::http::limits::EdgeLimits) -> EdgeArgs {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        EdgeArgs {
            body_timeout_ms: millis(limits.body_timeout),
            head_timeout_ms: millis(limits.head_timeout),
            disconnect_timeout_ms: millis(limits.disconnect_timeout),
            max_connections: u32::try_from(limits.max_connections).unwrap_or(u32::MAX),
        }
    }
}

impl EdgeArgs {
    pub fn limits(&self) -> porter_gateway::http::limits::EdgeLimits {
        use std::time::Duration;
        porter_gateway::http::limits::EdgeLimits {
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            head_timeout: Duration::from_millis(self.head_timeout_ms),
            disconnect_timeout: Duration::from_millis(self.disconnect_timeout_ms),
            max_connections: self.max_connections as usize,
        }
    }
}

impl Default for ProtectionArgs {
    fn default() -> ProtectionArgs {
        ProtectionArgs {
            rate_limit_user: None,
            rate_limit_client: None,
            rate_limit_ip: None,
            trusted_proxies: Vec::new(),
            max_tasks_in_flight: 20_000,
            max_header_bytes: 16 * 1024,
            cors_origins: Vec::new(),
            presence_ttl: 60,
            webhook_max_age: 300,
            edge: EdgeArgs::default(),
        }
    }
}

impl ProtectionArgs {
    pub fn config(&self) -> porter_gateway::protection::ProtectionConfig {
        porter_gateway::protection::ProtectionConfig {
            rate_user: self.rate_limit_user.and_then(OrOff::value),
            rate_client: self.rate_limit_client.and_then(OrOff::value),
            rate_ip: self.rate_limit_ip.and_then(OrOff::value),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .filter_map(|p| p.value())
                .map(|p| p.0)
                .collect(),
            max_tasks_in_flight: Some(self.max_tasks_in_flight).filter(|c| *c > 0),
            max_header_bytes: self.max_header_bytes.max(1024),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            presence_ttl: std::time::Duration::from_secs(self.presence_ttl.max(1)),
            webhook_max_age: std::time::Duration::from_secs(self.webhook_max_age.max(1)),
        }
    }
}

/// A setting that may also be switched off: an empty value or `off` is `None`, so a
/// deployment can blank an environment variable instead of removing it.
#[derive(Debug, Clone, Copy)]
pub struct OrOff<T>(Option<T>);

impl<T: Copy> OrOff<T> {
    pub fn value(self) -> Option<T> {
        self.0
    }
}

impl<T: std::str::FromStr> std::str::FromStr for OrOff<T> {
    type Err = T::Err;

    fn from_str(text: &str) -> Result<OrOff<T>, T::Err> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            Ok(OrOff(None))
        } else {
            text.parse().map(|v| OrOff(Some(v)))
        }
    }
}

#[cfg(test)]
mod protection_args_tests {
    use super::*;

    fn gateway(args: &[&str]) -> GatewayArgs {
        let cli = Cli::try_parse_from([&["porter", "gateway"], args].concat()).expect("parses");
        match cli.command {
            Command::Gateway(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_limit_nothing_and_match_default() {
        let parsed = gateway(&[]).http.protection;
        let config = parsed.config();
        assert!(config.rate_user.is_none() && config.rate_client.is_none());
        assert!(config.rate_ip.is_none() && config.cors_origins.is_empty());
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.max_tasks_in_flight, Some(20_000));
        let default = ProtectionArgs::default().config();
        assert_eq!(format!("{config:?}"), format!("{default:?}"));
    }

    #[test]
    fn flags_configure_protection() {
        let config = gateway(&[
            "--rate-limit-user",
            "20/s",
            "--rate-limit-ip",
            "off",
            "--trusted-proxies",
            "10.0.0.0/8,::1",
            "--cors-origins",
            "https://a.example, https://b.example",
            "--max-tasks-in-flight",
            "0",
            "--presence-ttl",
            "30",
        ])
        .http
        .protection
        .config();
        assert_eq!(config.rate_user.map(|q| q.count), Some(20));
        assert!(config.rate_ip.is_none());
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(
            config.cors_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.max_tasks_in_flight, None);
        assert_eq!(config.presence_ttl.as_secs(), 30);
        assert!(Cli::try_parse_from(["porter", "gateway", "--rate-limit-user", "x"]).is_err());
    }

    #[test]
    fn edge_limits_default_to_the_gateways_and_refuse_what_would_disable_them() {
        use porter_gateway::http::limits::EdgeLimits;
        assert_eq!(
            gateway(&[]).http.protection.edge.limits(),
            EdgeLimits::default()
        );
        let limits = gateway(&[
            "--body-timeout-ms",
            "250",
            "--head-timeout-ms",
            "2000",
            "--disconnect-timeout-ms",
            "0",
            "--max-connections",
            "64",
        ])
        .http
        .protection
        .edge
        .limits();
        assert_eq!(limits.body_timeout.as_millis(), 250);
        assert_eq!(limits.head_timeout.as_millis(), 2000);
        assert!(limits.disconnect_timeout.is_zero());
        assert_eq!(limits.max_connections, 64);
        for bad in [
            ["--body-timeout-ms", "0"],
            ["--body-timeout-ms", "18446744073709551615"],
            ["--head-timeout-ms", "0"],
            ["--max-connections", "0"],
            ["--max-connections", "-1"],
            ["--disconnect-timeout-ms", "soon"],
        ] {
            let error = Cli::try_parse_from([&["porter", "gateway"][..], &bad[..]].concat())
                .expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }
}
