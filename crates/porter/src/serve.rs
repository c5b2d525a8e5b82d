//! Wiring of the long-running modes: `gateway`, `worker` and `dev`.
//!
//! The same gateway and worker code runs in every mode; only the transport (AMQP or local)
//! and the store (Redis or memory) differ.
//!
//! Credentials: the broker and Redis URLs are checked before anything starts (a bad one is
//! exit code 2 and one line naming the variable, never quoting it), and every log line and
//! every error these modes return pass through [`redact_url`], because libraries log text we
//! do not write: lapin logs RabbitMQ's refusals, which echo parts of the URL.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use porter_broker::amqp::{
    AmqpClient, AmqpConfig, AmqpEventSink, AmqpSource, QueueType, ReplyMode, check_url, redact_url,
};
use porter_broker::events::EventSink;
use porter_broker::{TaskClient, local, local_events};
use porter_core::cache::RuleStamps;
use porter_core::policy::{Policy, PrivateData};
use porter_core::routing::Queue;
use porter_core::task_auth::{Mode, TaskAuth, TaskKeys};
use porter_gateway::admin_guard::AdminGuard;
use porter_gateway::handlers::publish::Publishing;
use porter_gateway::http::limits::EdgeLimits;
use porter_gateway::scoped_keys::ScopedKeys;
use porter_gateway::{AppState, GatewayConfig};
use porter_store::memory::MemoryStore;
use porter_store::redis::RedisStore;
use porter_store::{Keys, Store};
use porter_worker::listener::{Health, Listener};
use porter_worker::registry::Registry;
use porter_worker::{Authorizer, Worker, WorkerConfig, WorkerMetrics};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::cli::{Backends, Credentials, DevArgs, GatewayArgs, HttpArgs, WorkerArgs};
use crate::tools::{load_policy, mint, private_data_compatibility, private_data_default, signer};

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactedStderr)
        .try_init();
}

/// Standard error, with the userinfo of every URL in a log line masked ([`redact_url`]).
struct RedactedStderr;

impl tracing_subscriber::fmt::MakeWriter<'_> for RedactedStderr {
    type Writer = RedactedLine;

    fn make_writer(&self) -> RedactedLine {
        RedactedLine(Vec::new())
    }
}

/// One event's output, held until the event is written whole: a URL split over two writes
/// would escape the mask.
struct RedactedLine(Vec<u8>);

impl std::io::Write for RedactedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        use std::io::Write;
        let line = redact_session_exchanges(&redact_url(&String::from_utf8_lossy(&self.0)));
        // Nowhere to report a failed log write.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// The line with the session id of every session exchange name in it masked
/// (`data.<32 hex>.published` → `data.<session>.published`): lapin logs the broker's text when
/// it closes a channel, and the 404 of an exchange that is gone (an events worker checking a
/// session's exchange) names the exchange, so the session id.
fn redact_session_exchanges(line: &str) -> String {
    const START: &str = "data.";
    const END: &str = ".published";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(START) {
        let (before, after) = rest.split_at(at + START.len());
        out.push_str(before);
        let id_len = after.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
        if id_len == 32 && after[id_len..].starts_with(END) {
            out.push_str("<session>");
            rest = &after[id_len..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Refuses a malformed broker or Redis URL before anything starts or logs, so that the
/// operator sees one line; neither message quotes the URL.
fn check_backends(backends: &Backends) -> anyhow::Result<()> {
    check_url(&backends.amqp_url)
        .map_err(|error| anyhow::anyhow!("AMQP_URL (or --amqp-url) {error}"))?;
    queue_type(backends)?;
    porter_broker::check_queue_prefix(&backends.queue_prefix)
        .map_err(|error| anyhow::anyhow!("PORTER_QUEUE_PREFIX (or --queue-prefix): {error}"))?;
    RedisStore::new(&backends.redis_url, Keys::default(), 1).context(INVALID_REDIS_URL)?;
    Ok(())
}

/// An error as one line with every URL's userinfo masked, for the CLI to print.
fn redacted(error: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(redact_url(&format!("{error:#}")))
}

/// `PORTER_QUEUE_TYPE`, read here rather than by clap so that a bad value is one line.
fn queue_type(backends: &Backends) -> anyhow::Result<QueueType> {
    backends
        .queue_type
        .trim()
        .parse()
        .map_err(|error: String| anyhow::anyhow!("PORTER_QUEUE_TYPE (or --queue-type): {error}"))
}

const INVALID_REDIS_URL: &str = "REDIS_URL (or --redis-url) is not a usable Redis URL";

/// Task authentication from `PORTER_TASK_KEYS` or `PORTER_TASK_KEYS_FILE` and
/// `PORTER_TASK_AUTH` (a blank variable counts as unset). Errors are one line and never quote
/// a key.
fn task_auth(backends: &crate::cli::Backends) -> anyhow::Result<TaskAuth> {
    let blank_is_unset = |text: &str| !text.trim().is_empty();
    let inline = backends
        .task_keys
        .as_ref()
        .map(|keys| keys.expose())
        .filter(|keys| blank_is_unset(keys));
    let list = match (inline, &backends.task_keys_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "set PORTER_TASK_KEYS or PORTER_TASK_KEYS_FILE (or their flags), not both"
        ),
        (Some(keys), None) => Some(keys.to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read PORTER_TASK_KEYS_FILE {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let keys = list
        .map(|list| TaskKeys::parse(&list))
        .transpose()
        .context("PORTER_TASK_KEYS")?;
    let mode = backends
        .task_auth
        .as_deref()
        .filter(|mode| blank_is_unset(mode))
        .map(str::parse::<Mode>)
        .transpose()
        .context("PORTER_TASK_AUTH")?;
    let auth = TaskAuth::new(mode, keys)
        .context("PORTER_TASK_AUTH (set PORTER_TASK_KEYS or PORTER_TASK_KEYS_FILE)")?;
    match auth.mode() {
        Mode::Off => tracing::info!("task authentication off: tasks and replies are not signed"),
        mode => tracing::info!(
            %mode,
            signing_key = auth.signing_key_id().unwrap_or_default(),
            "task authentication on"
        ),
    }
    Ok(auth)
}

fn app_state(
    http: &HttpArgs,
    policy: Arc<Policy>,
    tasks: Arc<dyn TaskClient>,
    store: Arc<dyn Store>,
) -> anyhow::Result<web::Data<AppState>> {
    let identity = crate::verifier::verifier(http, store.clone(), tasks.clone())?;
    let scoped = ScopedKeys::new(&policy, |name| std::env::var(name).ok());
    let private_data = private_data_default(http.sign_private_data);
    for (setting, line) in private_data_compatibility(&policy, private_data) {
        match setting {
            PrivateData::Signed => tracing::warn!("{line}"),
            PrivateData::Events => tracing::info!("{line}"),
        }
    }
    Ok(web::Data::new(AppState {
        signer: signer(&http.credentials)?,
        stamps: RuleStamps::of(&policy),
        policy,
        tasks,
        store,
        identity,
        config: GatewayConfig {
            max_channels: http.max_channels.max(1),
            grace: Duration::from_millis(http.grace_ms),
            private_data,
        },
        metrics: Default::default(),
        admin: AdminGuard::new(http.admin_token.as_deref()),
        protection: porter_gateway::protection::Protection::new(http.protection.config()),
        scoped,
    }))
}

/// The publish endpoints' settings: the app's credentials (checked by [`signer`] already) and
/// the events queue.
fn publishing(
    credentials: &Credentials,
    sink: Arc<dyn EventSink>,
) -> anyhow::Result<web::Data<Publishing>> {
    let (Some(key), Some(secret)) = (&credentials.key, &credentials.secret) else {
        anyhow::bail!("PUSHER_KEY and PUSHER_SECRET (or --key and --secret) are required");
    };
    Ok(web::Data::new(Publishing::new(
        &credentials.app_id,
        key,
        porter_core::signing::Secret::new(secret.as_str()),
        sink,
    )))
}

/// Serves the gateway's app. `edge` bounds what a slow or idle client can hold: the body
/// deadline (read by the app), the head deadline and the connections per worker (actix's).
async fn serve_http(
    state: web::Data<AppState>,
    publishing: Option<web::Data<Publishing>>,
    listen: std::net::SocketAddr,
    workers: Option<usize>,
    edge: EdgeLimits,
) -> anyhow::Result<()> {
    let server = porter_gateway::server::bind(state, publishing, listen, workers, edge)
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "gateway listening");
    server.await.context("HTTP server failed")
}

pub fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    run_gateway(args).map_err(redacted)
}

fn run_gateway(args: GatewayArgs) -> anyhow::Result<()> {
    init_tracing();
    check_backends(&args.backends)?;
    let policy = Arc::new(load_policy(args.backends.policy.as_deref())?);
    let task_auth = task_auth(&args.backends)?;
    let queue_type = queue_type(&args.backends)?;
    actix_web::rt::System::new().block_on(async move {
        let stop = CancellationToken::new();
        let config = AmqpConfig {
            url: args.backends.amqp_url.clone(),
            queue_prefix: args.backends.queue_prefix.clone(),
            reply_mode: args.reply_mode,
            task_auth,
            queue_type,
        };
        let client = AmqpClient::start(config.clone(), stop.clone());
        // Publications go out on a connection of their own, in confirm mode.
        let events = AmqpEventSink::start(config, stop.clone())
            .context("PORTER_QUEUE_PREFIX is too long for a queue name")?;
        let publishing = publishing(&args.http.credentials, Arc::new(events.clone()))?;
        let store = RedisStore::new(
            &args.backends.redis_url,
            Keys::new(&args.backends.key_prefix),
            2,
        )
        .context(INVALID_REDIS_URL)?;
        let state = app_state(
            &args.http,
            policy,
            Arc::new(client.clone()),
            Arc::new(store),
        )?;
        crate::verifier::preload(&state.identity, &args.http).await?;
        let edge = args.http.protection.edge.limits();
        let result = serve_http(
            state,
            Some(publishing),
            args.listen,
            args.http.http_workers,
            edge,
        )
        .await;
        client.close().await;
        events.close().await;
        result
    })
}

fn parse_queues(names: &[String]) -> anyhow::Result<Vec<Queue>> {
    let queues = names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            Queue::parse(n.trim())
                .with_context(|| format!("unknown queue `{n}`; use auth and/or auth/high"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!queues.is_empty(), "--queues must name at least one queue");
    Ok(queues)
}

/// The worker's `--http-listen` address; blank counts as unset (the listener off).
fn parse_http_listen(text: Option<&str>) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "--http-listen (or PORTER_HTTP_LISTEN) {text:?} is not an IP:PORT address (e.g. 0.0.0.0:9090)"
        )
    })
}

/// Cancels the token on SIGTERM or Ctrl-C.
fn cancel_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping: finishing the tasks in hand");
        stop.cancel();
    });
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    run_worker(args).map_err(redacted)
}

fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    init_tracing();
    check_backends(&args.backends)?;
    let policy = Arc::new(load_policy(args.backends.policy.as_deref())?);
    if args.events {
        return run_events_worker(args, policy);
    }
    let queues = parse_queues(&args.queues)?;
    let http_listen = parse_http_listen(args.http_listen.as_deref())?;
    let task_auth = task_auth(&args.backends)?;
    let queue_type = queue_type(&args.backends)?;
    // One thread: everything but lapin's I/O thread runs on the thread that reads the
    // deliveries, with no hand-offs between runtime threads.
    let mut runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if args.threads > 1 {
            builder.worker_threads(args.threads);
        }
        builder
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        cancel_on_signal(stop.clone());
        let store = RedisStore::new(
            &args.backends.redis_url,
            Keys::new(&args.backends.key_prefix),
            2,
        )
        .context(INVALID_REDIS_URL)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = Arc::new(WorkerMetrics::new(
            policy.rules().iter().map(|rule| rule.name.as_str()),
        ));
        let authorizer = Authorizer::new(policy, store.clone(), Registry::builtin())
            .with_metrics(metrics.clone());
        let source = AmqpSource::new(
            AmqpConfig {
                url: args.backends.amqp_url.clone(),
                queue_prefix: args.backends.queue_prefix.clone(),
                reply_mode: ReplyMode::default(),
                task_auth,
                queue_type,
            },
            queues,
            args.prefetch.max(1),
            stop,
        );
        let listener = match http_listen {
            Some(address) => {
                let health = Health {
                    metrics: metrics.clone(),
                    source: source.status(),
                    store,
                };
                let listener = Listener::start(address, health)
                    .with_context(|| format!("cannot listen on {address} (--http-listen)"))?;
                tracing::info!(%address, "worker health and metrics listening");
                Some(listener)
            }
            None => None,
        };
        Worker::new(
            authorizer,
            WorkerConfig {
                concurrency: args.concurrency,
            },
        )
        .with_metrics(metrics)
        .run(source)
        .await;
        if let Some(listener) = listener {
            listener.stop().await;
        }
        tracing::info!("worker stopped");
        Ok(())
    })
}

/// `porter worker --events`: applies published events from `{prefix}events` instead of
/// deciding tasks, so that the Pusher secret an upstream needs is in no authorizing worker.
fn run_events_worker(args: WorkerArgs, policy: Arc<Policy>) -> anyhow::Result<()> {
    let http_listen = parse_http_listen(args.http_listen.as_deref())?;
    let queue_type = queue_type(&args.backends)?;
    let upstream = args.events_settings.upstream()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        cancel_on_signal(stop.clone());
        let store = RedisStore::new(
            &args.backends.redis_url,
            Keys::new(&args.backends.key_prefix),
            2,
        )
        .context(INVALID_REDIS_URL)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = Arc::new(WorkerMetrics::new(std::iter::empty::<&str>()));
        let config = AmqpConfig {
            url: args.backends.amqp_url.clone(),
            queue_prefix: args.backends.queue_prefix.clone(),
            reply_mode: ReplyMode::default(),
            task_auth: porter_core::task_auth::TaskAuth::off(),
            queue_type,
        };
        let source =
            porter_broker::amqp::AmqpEventSource::new(config.clone(), args.prefetch.max(1), stop);
        let listener = match http_listen {
            Some(address) => {
                let health = Health {
                    metrics: metrics.clone(),
                    source: source.status(),
                    store: store.clone(),
                };
                let listener = Listener::start(address, health)
                    .with_context(|| format!("cannot listen on {address} (--http-listen)"))?;
                tracing::info!(%address, "events worker health and metrics listening");
                Some(listener)
            }
            None => None,
        };
        let parts = crate::events_worker::EventParts {
            store,
            policy,
            exchanges: Arc::new(porter_broker::amqp::AmqpSessionExchanges::new(config)),
            upstream,
            metrics: metrics.publish().clone(),
        };
        crate::events_worker::consume(parts, args.events_settings.events_concurrency, source).await;
        if let Some(listener) = listener {
            listener.stop().await;
        }
        tracing::info!("events worker stopped");
        Ok(())
    })
}

/// Demo credentials of `porter dev`: the values of Pusher's documentation, never for production.
const DEV_KEY: &str = "278d425bdf160c739803";
const DEV_SECRET: &str = "7ad3773142a6692b25b8";
const DEV_MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const DEV_JWT_SECRET: &str = "porter-dev-secret";

async fn seed_demo_data(store: &MemoryStore) -> anyhow::Result<()> {
    store
        .set_retained_event("private-stream@42", "stream.online", r#"{"online":true}"#)
        .await?;
    store
        .set_retained_event(
            "private-stream@42",
            "stream.viewers.updated",
            r#"{"viewers":128}"#,
        )
        .await?;
    store
        .set_user_info(
            "7",
            &[
                ("name".to_owned(), "\"Ann\"".to_owned()),
                ("level".to_owned(), "12".to_owned()),
            ],
        )
        .await?;
    store
        .set_online("7", Duration::from_secs(24 * 3600))
        .await?;
    Ok(())
}

pub fn dev(args: DevArgs) -> anyhow::Result<()> {
    init_tracing();
    let policy = Arc::new(load_policy(args.policy.as_deref())?);
    let http = HttpArgs {
        credentials: Credentials {
            app_id: "100000".to_owned(),
            key: Some(DEV_KEY.to_owned()),
            secret: Some(DEV_SECRET.to_owned()),
            master_key: Some(DEV_MASTER_KEY.to_owned()),
        },
        jwt_secret: Some(DEV_JWT_SECRET.to_owned()),
        max_channels: 100,
        grace_ms: 250,
        sign_private_data: false,
        admin_token: None,
        http_workers: None,
        protection: args.protection.clone(),
        identity: Box::default(),
    };
    actix_web::rt::System::new().block_on(async move {
        let stop = CancellationToken::new();
        let (client, source) = local::channel(stop.clone());
        let store = Arc::new(MemoryStore::new(Keys::default()));
        seed_demo_data(&store).await?;
        let authorizer = Authorizer::new(policy.clone(), store.clone(), Registry::builtin());
        let (dev_store, dev_policy): (Arc<dyn Store>, _) = (store.clone(), policy.clone());
        for _ in 0..args.workers.max(1) {
            let worker = Worker::new(authorizer.clone(), WorkerConfig { concurrency: 256 });
            let source = source.clone();
            actix_web::rt::spawn(async move { worker.run(source).await });
        }
        let state = app_state(&http, policy, Arc::new(client), store)?;
        // Published events wait in memory for the events consumer, as over AMQP.
        let (events, event_receiver) = local_events::events_channel(local_events::DEFAULT_CAPACITY);
        let publishing = publishing(&http.credentials, Arc::new(events))?;
        let upstream = crate::events_worker::EventsArgs {
            upstream_url: args.upstream_url.clone(),
            key: Some(DEV_KEY.to_owned()),
            secret: Some(crate::concealed::Concealed::new(DEV_SECRET)),
            upstream_attempts: 5,
            upstream_backoff_ms: 200,
            events_concurrency: 16,
        }
        .upstream()?;
        let exchanges = Arc::new(porter_broker::session_publish::LocalSessionExchanges::default());
        let parts = crate::events_worker::EventParts {
            store: dev_store.clone(),
            policy: dev_policy.clone(),
            exchanges,
            upstream,
            metrics: Default::default(),
        };
        let consumer_receiver = event_receiver.clone();
        actix_web::rt::spawn(crate::events_worker::consume(parts, 16, consumer_receiver));

        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String("7".into()));
        claims.insert("name".into(), Value::String("Ann".into()));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        claims.insert("exp".into(), (now + 24 * 3600).into());
        let token = mint(&claims, DEV_JWT_SECRET.as_bytes())?;
        let url = format!("http://{}", args.listen);
        println!("Porter dev: gateway and {} workers in one process, in memory.", args.workers.max(1));
        println!("  url:        {url}");
        println!("  app:        id 100000, key {DEV_KEY} (demo credentials)");
        println!("  demo token: {token}   (user 7, Ann)");
        println!();
        println!("Try:");
        println!(
            "  curl -s -H 'Authorization: Bearer {token}' '{url}/pusher/batch-authenticate?app_id=100000&socket_id=123.456&channels=private-stream@42&channels=presence-stream@42&channels=private-encrypted-chat@9'"
        );
        println!("  curl -s -X POST -d 'socket_id=123.456&channel_name=private-user@7' {url}/pusher/auth");
        let edge = http.protection.edge.limits();
        let result = serve_http(
            state,
            Some(publishing),
            args.listen,
            http.http_workers,
            edge,
        ).await;
        drop(event_receiver);
        stop.cancel();
        result
    })
}
