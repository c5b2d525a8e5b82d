//! `porter bench`: the load generator behind `docs/benchmarks.md`.
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
//! porter bench --scenario miss10 --connections 16 --duration 10 \
//!     --jwt-secret "$PORTER_JWT_SECRET" --pid gateway=$(pgrep -n porter) --json
//! ```
//!
//! Latencies are those of successful requests; a request is an error when its status is not 200
//! or, on the batch endpoint, when any channel comes back with a `reason`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use porter_broker::amqp::ReplyMode;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CLOCK_TICKS_PER_S: f64 = 100.0;

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

/// Arguments of `porter bench`.
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

/// Everything a connection needs to build and send requests.
struct Ctx {
    addr: String,
    host: String,
    base: String,
    auth: String,
    app_id: String,
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
        eprintln!("porter bench: no --token or --jwt-secret; presence channels will be refused");
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
                eprintln!("porter bench: the cache warm-up request failed");
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

fn http_request(ctx: &Ctx, method: &str, path: &str, form: &str) -> Vec<u8> {
    let (base, host, auth, len) = (&ctx.base, &ctx.host, &ctx.auth, form.len());
    let head =
        format!("{method} {base}{path} HTTP/1.1\r\nHost: {host}\r\n{auth}X-Client-ID: bench\r\n");
    let body = if form.is_empty() {
        String::new()
    } else {
        format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n")
    };
    format!("{head}{body}\r\n{form}").into_bytes()
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

/// One keep-alive connection; reconnects lazily after an error.
struct Conn {
    ctx: Arc<Ctx>,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(ctx: Arc<Ctx>) -> Self {
        Conn { ctx, stream: None }
    }

    async fn connect(&mut self) -> Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.ctx.addr)
                .await
                .with_context(|| format!("connecting to {}", self.ctx.addr))?;
            stream.set_nodelay(true).context("setting TCP_NODELAY")?;
            self.stream = Some(BufReader::new(stream));
        }
        self.stream.as_mut().context("no connection")
    }

    async fn send(&mut self, req: &[u8]) -> Result<Response> {
        let exchange = async {
            let stream = self.connect().await?;
            stream
                .get_mut()
                .write_all(req)
                .await
                .context("writing the request")?;
            read_response(stream).await
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        let result = result.unwrap_or_else(|_| Err(anyhow::anyhow!("request timed out")));
        if result.as_ref().map_or(true, |r| r.close) {
            self.stream = None;
        }
        result
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

/// Reads one CRLF-terminated line into `buf` and returns it trimmed; EOF is an error.
async fn next_line<'a, R: AsyncBufRead + Unpin>(r: &mut R, buf: &'a mut String) -> Result<&'a str> {
    buf.clear();
    if r.read_line(buf).await.context("reading from the server")? == 0 {
        bail!("connection closed by the server");
    }
    Ok(buf.trim_end())
}

async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Response> {
    let mut buf = String::new();
    let line = next_line(r, &mut buf).await?;
    let mut close = line.starts_with("HTTP/1.0");
    let status = line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?;
    let status: u16 = status
        .parse()
        .with_context(|| format!("bad status {status:?}"))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let line = next_line(r, &mut buf).await?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').context("malformed header")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = next_line(r, &mut buf).await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while !next_line(r, &mut buf).await?.is_empty() {} // trailers
                break;
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            r.read_exact(&mut body[start..])
                .await
                .context("reading a chunk")?;
            ensure!(body.ends_with(b"\r\n"), "chunk not followed by CRLF");
            body.truncate(start + size);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body).await.context("reading the body")?;
    } else if status >= 200 && status != 204 && status != 304 {
        r.read_to_end(&mut body).await.context("reading the body")?;
        close = true;
    }
    Ok(Response {
        status,
        body,
        close,
    })
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

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`.
fn parse_proc_stat(stat: &str) -> Result<u64> {
    let rest = &stat[stat.rfind(')').context("no ')' in /proc stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): fields 14 and 15 are at indices 11 and 12.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat field")
    };
    Ok(tick(11)? + tick(12)?)
}

fn cpu_snapshot(pids: &[(String, u32)]) -> Vec<Option<u64>> {
    let ticks = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    pids.iter()
        .map(|(_, pid)| parse_proc_stat(&ticks(*pid)?).ok())
        .collect()
}

/// CPU use of each process over `window`, as a percentage of one core.
fn cpu_report(
    pids: &[(String, u32)],
    before: Vec<Option<u64>>,
    window: Duration,
) -> Vec<(String, f64)> {
    let after = cpu_snapshot(pids);
    let mut report = Vec::new();
    for (((name, pid), b), a) in pids.iter().zip(before).zip(after) {
        let (Some(b), Some(a)) = (b, a) else {
            eprintln!("porter bench: cannot read the CPU use of {name} (pid {pid})");
            continue;
        };
        let secs = window.as_secs_f64().max(1e-9);
        report.push((
            name.clone(),
            a.saturating_sub(b) as f64 / CLOCK_TICKS_PER_S / secs * 100.0,
        ));
    }
    report
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
    fn proc_stat_with_spaces_in_comm() {
        let stat = "1234 (porter (gw) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_proc_stat(stat).ok(), Some(325));
        assert!(parse_proc_stat("garbage").is_err());
    }

    #[tokio::test]
    async fn reads_chunked_then_sized_responses() {
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\n{\"a\"\r\n7;x=1\r\n:{\"b\":1\r\n1\r\n}\r\n0\r\n\r\n\
            HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}";
        let mut r = wire;
        let first = read_response(&mut r).await.expect("first response");
        assert_eq!((first.status, first.close), (200, false));
        assert_eq!(first.body, b"{\"a\":{\"b\":1}");
        let second = read_response(&mut r).await.expect("second response");
        assert_eq!(
            (second.status, second.body.as_slice(), second.close),
            (403, &b"{}"[..], true)
        );
        assert_eq!(classify(&second, true).as_deref(), Some("http_403"));
        let reason = Response {
            status: 200,
            body: br#"{"c":{"reason":"time limit"}}"#.to_vec(),
            close: false,
        };
        assert_eq!(
            classify(&reason, true).as_deref(),
            Some("reason_time_limit")
        );
    }
}
