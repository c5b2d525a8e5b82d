//! `porter-bench`: the load generator behind `docs/benchmarks.md`.
//!
//! A hand-written HTTP/1.1 keep-alive client (one TCP connection per worker) drives a running
//! gateway with one of four scenarios and prints throughput, latency percentiles, errors by kind
//! and, for the processes named with `--pid`, their CPU use over the measured window:
//!
//! - `miss10`: `GET /pusher/batch-authenticate` with 10 random channels (cache misses);
//! - `hit10`: the same endpoint with a fixed set of 10 private channels (cache hits);
//! - `single`: `POST /pusher/auth` with one random channel, as pusher-js sends it;
//! - `storm`: `--clients` clients with 5 channels each, all at once; reports the time until
//!   every client is authorized;
//! - `floor`: no gateway at all: the bare RabbitMQ publish → consume → reply loop of
//!   [`crate::floor`], `--connections` tasks in flight, the ceiling `miss10` is measured against.
//!
//! ```text
//! porter-bench --scenario miss10 --connections 16 --duration 10 \
//!     --jwt-secret "$PORTER_JWT_SECRET" --pid gateway=$(pgrep -n porter) --json
//! ```
//!
//! Latencies are those of successful requests; a request is an error when its status is not 200
//! or, on the batch endpoint, when any channel comes back with a `reason`.
//!
//! Over 500 lines: the arguments, the scenarios and the report share `Tally` and read as one
//! piece; the HTTP client (`http`) and the CPU sampling (`cpu`) live apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use porter_broker::amqp::ReplyMode;

use crate::cpu::{cpu_report, cpu_snapshot};
use crate::http::{Conn, Ctx, Response, http_request};

/// What to send (`miss10`, `hit10`, `single`, `storm`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Miss10,
    Hit10,
    Single,
    Storm,
    Floor,
}

impl Scenario {
    fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

/// Arguments of `porter-bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URL of the gateway (plain http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "miss10")]
    scenario: Scenario,
    /// Concurrent keep-alive connections, each a closed loop (storm opens min(clients, 256)).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Pusher app id sent as `app_id`.
    #[arg(long, env = "PUSHER_APP_ID", default_value = "100000")]
    app_id: String,
    /// Bearer token (JWT); presence channels need one.
    #[arg(long)]
    token: Option<String>,
    /// HS256 secret to mint a token with when `--token` is not given.
    #[arg(long, env = "PORTER_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Number of clients of the storm scenario.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Process whose CPU use to report, as NAME=PID (repeatable).
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = parse_pid_arg)]
    pids: Vec<(String, u32)>,
    /// Also print one JSON line with all results.
    #[arg(long)]
    json: bool,
    /// RabbitMQ of the `floor` scenario.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// Queue prefix of the `floor` scenario (its own queues, so it never meets real tasks).
    #[arg(long, env = "PORTER_QUEUE_PREFIX", default_value = "porter-floor.")]
    queue_prefix: String,
    /// Reply mode of the `floor` scenario: `exclusive` or `direct`.
    #[arg(long, default_value = "exclusive")]
    reply_mode: ReplyMode,
}

fn parse_pid_arg(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|e| format!("bad pid {pid:?}: {e}"))?;
    Ok((name.to_string(), pid))
}

/// Runs the benchmark described by `args` and prints the report.
pub async fn run(args: BenchArgs) -> Result<()> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(args.clients > 0, "--clients must be at least 1");
    let duration = Duration::try_from_secs_f64(args.duration).context("bad --duration")?;
    let warmup = Duration::try_from_secs_f64(args.warmup).context("bad --warmup")?;
    if args.scenario == Scenario::Floor {
        return run_floor(&args, warmup, duration).await;
    }
    let rest = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://")?;
    let (host, base) = rest.split_once('/').unwrap_or((rest, ""));
    ensure!(!host.is_empty(), "--url has no host");
    let port = if host.contains(':') { "" } else { ":80" };
    let token = match (&args.token, &args.jwt_secret) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(secret)) => Some(mint_token(secret)?),
        (None, None) => None,
    };
    if token.is_none() && args.scenario != Scenario::Single && args.scenario != Scenario::Hit10 {
        eprintln!("porter-bench: no --token or --jwt-secret; presence channels will be refused");
    }
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n"));
    let ctx = Arc::new(Ctx {
        addr: format!("{host}{port}"),
        host: host.to_string(),
        base: format!("/{base}").trim_end_matches('/').to_string(),
        auth: auth.unwrap_or_default(),
        app_id: args.app_id.clone(),
    });

    let (tally, window, connections, storm, cpu) = if args.scenario == Scenario::Storm {
        let connections = args.clients.min(256);
        let cpu0 = cpu_snapshot(&args.pids);
        let (tally, total, failed) = storm(&ctx, args.clients, connections).await?;
        let cpu = cpu_report(&args.pids, cpu0, total);
        (tally, total, connections, Some((total, failed)), cpu)
    } else {
        if args.scenario == Scenario::Hit10 {
            let req = build_request(&ctx, Scenario::Hit10, &mut Rng::new());
            let resp = Conn::new(ctx.clone()).send(&req).await;
            if !Tally::default().record(&resp, true, Instant::now()) {
                eprintln!("porter-bench: the cache warm-up request failed");
            }
        }
        let measure_from = Instant::now() + warmup;
        let until = measure_from + duration;
        let handles: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(closed_loop(ctx.clone(), args.scenario, measure_from, until)))
            .collect();
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu0 = cpu_snapshot(&args.pids);
        let started = Instant::now();
        tokio::time::sleep_until(until.into()).await;
        let cpu = cpu_report(&args.pids, cpu0, started.elapsed());
        let mut tally = Tally::default();
        for h in handles {
            tally.merge(h.await.context("bench worker panicked")?);
        }
        (tally, duration, args.connections, None, cpu)
    };
    report(&args, &tally, window, connections, storm, &cpu);
    Ok(())
}

async fn run_floor(args: &BenchArgs, warmup: Duration, duration: Duration) -> Result<()> {
    // Sample CPU over the measured window only: the warm-up ends at a known instant.
    // Both sides of the loop run in this process, so its own CPU is part of the floor.
    let mut pids = args.pids.clone();
    pids.push(("porter-floor".to_owned(), std::process::id()));
    let watched = pids.clone();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        (cpu_snapshot(&pids), Instant::now())
    });
    let loops = crate::floor::run(
        &args.amqp_url,
        &args.queue_prefix,
        args.reply_mode,
        args.connections,
        warmup,
        duration,
    )
    .await?;
    let (before, from) = sampler.await.context("CPU sampler panicked")?;
    let cpu = cpu_report(&watched, before, from.elapsed());
    let mut tally = Tally::default();
    for result in loops {
        tally.ok += result.latencies_us.len() as u64;
        tally.lat_us.extend(result.latencies_us);
        for (kind, count) in result.errors {
            *tally.errors.entry(kind).or_default() += count;
        }
    }
    report(args, &tally, duration, args.connections, None, &cpu);
    Ok(())
}

fn report(
    args: &BenchArgs,
    t: &Tally,
    window: Duration,
    connections: usize,
    storm: Option<(Duration, u64)>,
    cpu: &[(String, f64)],
) {
    let mut lat = t.lat_us.clone();
    lat.sort_unstable();
    let secs = window.as_secs_f64().max(1e-9);
    let errors: u64 = t.errors.values().sum();
    let requests = t.ok + errors;
    let channels = t.ok * channels_per_request(args.scenario);
    let ms = |p: f64| percentile(&lat, p) as f64 / 1000.0;
    let (p50, p90, p99, max) = (ms(50.0), ms(90.0), ms(99.0), ms(100.0));
    println!(
        "scenario {}  connections {connections}  duration {secs:.1} s",
        args.scenario.name()
    );
    println!(
        "requests {requests} ({:.1}/s)  channels {channels} ({:.1}/s)  errors {errors}",
        requests as f64 / secs,
        channels as f64 / secs
    );
    println!("latency ms  p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}");
    if !t.errors.is_empty() {
        let list: Vec<String> = t.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("errors  {}", list.join("  "));
    }
    if !cpu.is_empty() {
        let list: Vec<String> = cpu.iter().map(|(n, p)| format!("{n} {p:.0}%")).collect();
        println!("cpu  {}", list.join("  "));
    }
    if let Some((total, storm_failed)) = storm {
        println!(
            "storm  {} clients authorized in {:.1} ms  ({storm_failed} failed after retries)",
            args.clients as u64 - storm_failed,
            total.as_secs_f64() * 1000.0
        );
    }
    if args.json {
        let line = json!({
            "scenario": args.scenario.name(), "connections": connections, "duration_s": secs,
            "requests": requests, "rps": requests as f64 / secs, "channels": channels,
            "channels_per_s": channels as f64 / secs, "errors": t.errors,
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "cpu": cpu.iter().cloned().collect::<BTreeMap<String, f64>>(),
            "storm_total_ms": storm.map(|(d, _)| d.as_secs_f64() * 1000.0),
            "storm_failed": storm.map(|(_, f)| f),
        });
        println!("{line}");
    }
}

fn mint_token(secret: &str) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?;
    let claims = json!({"sub": "bench-user", "name": "Bench", "exp": now.as_secs() + 3600});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).context("minting the JWT")
}

/// Requests, latencies and errors of one or more workers.
#[derive(Default)]
struct Tally {
    lat_us: Vec<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.lat_us.extend(other.lat_us);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    /// Records one outcome; returns whether it was a success.
    fn record(&mut self, outcome: &Result<Response>, batch: bool, started: Instant) -> bool {
        let kind = outcome
            .as_ref()
            .map_or_else(|_| Some("io".into()), |r| classify(r, batch));
        if let Some(kind) = kind {
            *self.errors.entry(kind).or_default() += 1;
            return false;
        }
        self.ok += 1;
        let micros = started.elapsed().as_micros();
        self.lat_us.push(u64::try_from(micros).unwrap_or(u64::MAX));
        true
    }
}

async fn closed_loop(
    ctx: Arc<Ctx>,
    scenario: Scenario,
    measure_from: Instant,
    until: Instant,
) -> Tally {
    let mut conn = Conn::new(ctx.clone());
    let mut rng = Rng::new();
    let mut tally = Tally::default();
    let mut scratch = Tally::default();
    let batch = scenario != Scenario::Single;
    loop {
        let started = Instant::now();
        if started >= until {
            return tally;
        }
        let req = build_request(&ctx, scenario, &mut rng);
        let outcome = conn.send(&req).await;
        let target = if started >= measure_from {
            &mut tally
        } else {
            &mut scratch
        };
        target.record(&outcome, batch, started);
        if outcome.is_err() {
            // The server is down or refusing: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Returns the tally, the time until every client was served, and the clients that never were.
async fn storm(
    ctx: &Arc<Ctx>,
    clients: usize,
    connections: usize,
) -> Result<(Tally, Duration, u64)> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut conn = Conn::new(ctx.clone());
        conn.connect().await?;
        conns.push(conn);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(storm_connection(conn, next.clone(), clients)))
        .collect();
    let (mut tally, mut failed) = (Tally::default(), 0);
    for h in handles {
        let (t, f) = h.await.context("storm worker panicked")?;
        tally.merge(t);
        failed += f;
    }
    Ok((tally, started.elapsed(), failed))
}

/// Serves storm clients through one connection until none is left; each gets up to 3 retries.
async fn storm_connection(mut conn: Conn, next: Arc<AtomicUsize>, clients: usize) -> (Tally, u64) {
    let (mut rng, mut tally, mut failed) = (Rng::new(), Tally::default(), 0);
    while next.fetch_add(1, Ordering::Relaxed) < clients {
        let channels = random_channels(&mut rng, 3, 2);
        let req = batch_request(&conn.ctx, &rng.socket_id(), &channels);
        let mut served = false;
        for _ in 0..4 {
            let started = Instant::now();
            let outcome = conn.send(&req).await;
            served = tally.record(&outcome, true, started);
            if served {
                break;
            }
        }
        failed += u64::from(!served);
    }
    (tally, failed)
}

fn channels_per_request(scenario: Scenario) -> u64 {
    match scenario {
        Scenario::Miss10 | Scenario::Hit10 => 10,
        Scenario::Single | Scenario::Floor => 1,
        Scenario::Storm => 5,
    }
}

fn build_request(ctx: &Ctx, scenario: Scenario, rng: &mut Rng) -> Vec<u8> {
    let socket = rng.socket_id();
    let channels = match scenario {
        Scenario::Hit10 => (1..=10)
            .map(|i| format!("private-stream-viewer@{i}"))
            .collect(),
        Scenario::Single => {
            let body = format!(
                "socket_id={socket}&channel_name=private-message%40{}",
                rng.next_u32()
            );
            return http_request(ctx, "POST", "/pusher/auth", &body);
        }
        _ => random_channels(rng, 5, 5),
    };
    batch_request(ctx, &socket, &channels)
}

/// `private` random `private-message@…` and `presence` random `presence-chat@…` channels.
fn random_channels(rng: &mut Rng, private: usize, presence: usize) -> Vec<String> {
    let kinds = std::iter::repeat_n("private-message", private)
        .chain(std::iter::repeat_n("presence-chat", presence));
    kinds
        .map(|kind| format!("{kind}@{}", rng.next_u32()))
        .collect()
}

fn batch_request(ctx: &Ctx, socket: &str, channels: &[String]) -> Vec<u8> {
    let mut path = format!(
        "/pusher/batch-authenticate?app_id={}&socket_id={socket}",
        ctx.app_id
    );
    for channel in channels {
        path.push_str("&channels=");
        path.push_str(&channel.replace('@', "%40"));
    }
    http_request(ctx, "GET", &path, "")
}

/// `None` for a success, else the error kind.
fn classify(resp: &Response, batch: bool) -> Option<String> {
    if resp.status != 200 {
        return Some(format!("http_{}", resp.status));
    }
    if !batch {
        return None;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(map)) => map.values().find_map(|v| v.get("reason")).map(|r| {
            let reason = r.as_str().map_or_else(|| r.to_string(), str::to_string);
            format!("reason_{}", reason.replace(' ', "_"))
        }),
        _ => Some("bad_json".to_string()),
    }
}

/// xorshift64*: fast, per worker, seeded from a random uuid.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(uuid::Uuid::new_v4().as_u64_pair().0 | 1)
    }

    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn socket_id(&mut self) -> String {
        format!("{}.{}", self.next_u32(), self.next_u32())
    }
}

/// Nearest-rank percentile of sorted values; 0 when empty.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 0.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn classifies_statuses_and_refused_channels() {
        let response = |status, body: &[u8]| Response {
            status,
            body: body.to_vec(),
            close: false,
        };
        let forbidden = response(403, b"{}");
        assert_eq!(classify(&forbidden, true).as_deref(), Some("http_403"));
        assert_eq!(classify(&forbidden, false).as_deref(), Some("http_403"));
        let reason = response(200, br#"{"c":{"reason":"time limit"}}"#);
        assert_eq!(
            classify(&reason, true).as_deref(),
            Some("reason_time_limit")
        );
        // Only the batch endpoint's body says per channel whether it was refused.
        assert_eq!(classify(&reason, false), None);
        assert_eq!(
            classify(&response(200, br#"{"c":{"auth":"k:s"}}"#), true),
            None
        );
        assert_eq!(
            classify(&response(200, b"not json"), true).as_deref(),
            Some("bad_json")
        );
    }
}
