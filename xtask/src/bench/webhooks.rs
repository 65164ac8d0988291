//! The webhook case of `cargo xtask bench`: a receiver on loopback subscribed to
//! `tenant.created`, tenants created at a steady rate (each 201 marks its commit), and the
//! time from that commit to the delivery's arrival; then a burst of creations as fast as the
//! server takes them, for how many events per second the runner delivers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::runtime::Runtime;

use super::http;

/// Changes per second in the latency phase (the issue's load).
pub const STEADY_RATE: u32 = 500;
/// Threads creating tenants; each paces itself to its share of the rate.
const CREATORS: u32 = 16;
/// Tenants created in the burst phase.
const BURST: u32 = 2_000;
/// Targets: commit to receipt.
const TARGET_P50_MS: f64 = 50.0;
const TARGET_P99_MS: f64 = 250.0;

/// When each tenant's delivery arrived, by tenant id.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// What the webhook case measured.
#[derive(Debug, Clone)]
pub struct WebhookMeasurement {
    /// Seconds of steady load.
    pub seconds: u64,
    /// Tenants created in the steady phase.
    pub created: usize,
    /// Of those, delivered.
    pub delivered: usize,
    /// Commit to receipt, median.
    pub p50_ms: f64,
    /// Commit to receipt, 99th percentile.
    pub p99_ms: f64,
    /// The rate actually offered.
    pub offered_per_sec: f64,
    /// Deliveries per second while a burst drained.
    pub burst_delivered_per_sec: f64,
}

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> StatusCode {
    let arrived = Instant::now();
    let tenant = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|message| message["data"]["data"]["id"].as_str().map(str::to_owned));
    if let Some(tenant) = tenant {
        arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant, arrived);
    }
    StatusCode::NO_CONTENT
}

fn start_receiver(runtime: &Runtime, arrivals: &Arrivals) -> Result<String, String> {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|error| format!("receiver: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("receiver: {error}"))?;
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(arrivals));
    runtime.spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{address}/hook"))
}

fn subscribe(key: &str, url: &str) -> Result<(), String> {
    let body = serde_json::json!({"url": url, "event_types": ["tenant.created"]}).to_string();
    match http("POST", "/v1/webhooks", Some(key), Some(&body))? {
        (201, _) => Ok(()),
        (status, body) => Err(format!("creating the bench endpoint: {status} {body}")),
    }
}

/// Creates `count` tenants from `CREATORS` threads, each pausing to keep `rate` per second
/// in all (`None`: as fast as the server answers); returns each tenant's id and when its
/// 201 arrived.
fn create_tenants(
    key: &str,
    prefix: &str,
    count: u32,
    rate: Option<u32>,
) -> Result<Vec<(String, Instant)>, String> {
    let per_thread = count.div_ceil(CREATORS);
    let gap = rate.map(|rate| Duration::from_secs(1) / (rate / CREATORS).max(1));
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CREATORS)
            .map(|thread| {
                scope.spawn(move || {
                    let mut created = Vec::new();
                    let started = Instant::now();
                    for n in 0..per_thread {
                        if let Some(gap) = gap {
                            let due = started + gap * n;
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        }
                        let body = format!(
                            r#"{{"slug":"{prefix}-{thread}-{n}","name":"Webhook bench","plan":"standard","status":"active"}}"#
                        );
                        let (status, answer) = http("POST", "/v1/tenants", Some(key), Some(&body))?;
                        let committed = Instant::now();
                        if status != 201 {
                            return Err(format!("creating a tenant: {status} {answer:.200}"));
                        }
                        let id = serde_json::from_str::<serde_json::Value>(&answer)
                            .ok()
                            .and_then(|tenant| tenant["id"].as_str().map(str::to_owned))
                            .ok_or_else(|| format!("a 201 without an id: {answer:.200}"))?;
                        created.push((id, committed));
                    }
                    Ok(created)
                })
            })
            .collect();
        let mut all = Vec::new();
        for thread in threads {
            all.extend(
                thread
                    .join()
                    .map_err(|_| "a creating thread panicked".to_owned())??,
            );
        }
        Ok(all)
    })
}

/// Waits until every tenant of `created` has arrived, or `within` passed.
fn await_arrivals(arrivals: &Arrivals, created: &[(String, Instant)], within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let arrived = arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if created.iter().all(|(id, _)| arrived.contains_key(id)) {
            return;
        }
        drop(arrived);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (fraction * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the webhook case against the server on `SERVER_ADDR`, authenticated with `key`.
pub fn measure(runtime: &Runtime, key: &str, seconds: u64) -> Result<WebhookMeasurement, String> {
    let arrivals: Arrivals = Arc::default();
    let url = start_receiver(runtime, &arrivals)?;
    subscribe(key, &url)?;
    let run = std::process::id();

    let count = STEADY_RATE * u32::try_from(seconds).unwrap_or(u32::MAX).max(1);
    let started = Instant::now();
    let created = create_tenants(key, &format!("wh{run}s"), count, Some(STEADY_RATE))?;
    let offered_per_sec = created.len() as f64 / started.elapsed().as_secs_f64();
    await_arrivals(&arrivals, &created, Duration::from_secs(60));
    let mut latencies: Vec<f64> = {
        let arrived = arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        created
            .iter()
            .filter_map(|(id, committed)| {
                arrived
                    .get(id)
                    .map(|at| at.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    latencies.sort_by(f64::total_cmp);

    let burst = create_tenants(key, &format!("wh{run}b"), BURST, None)?;
    let first_commit = burst.iter().map(|(_, at)| *at).min();
    await_arrivals(&arrivals, &burst, Duration::from_secs(120));
    let last_arrival = {
        let arrived = arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        burst
            .iter()
            .filter_map(|(id, _)| arrived.get(id).copied())
            .max()
    };
    let burst_delivered_per_sec = match (first_commit, last_arrival) {
        (Some(first), Some(last)) => {
            burst.len() as f64
                / last
                    .saturating_duration_since(first)
                    .as_secs_f64()
                    .max(1e-3)
        }
        _ => 0.0,
    };
    Ok(WebhookMeasurement {
        seconds,
        created: created.len(),
        delivered: latencies.len(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        offered_per_sec,
        burst_delivered_per_sec,
    })
}

/// The report's webhook section.
pub fn render(measured: &WebhookMeasurement) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Webhooks\n\nA receiver on loopback subscribed to `tenant.created`; {CREATORS} threads \
         create tenants at {STEADY_RATE} per second for {} s (the time a 201 arrives stands for \
         the commit), then {BURST} more as fast as the server takes them. The runner runs \
         inside the server (`WORKER=on`).\n",
        measured.seconds
    );
    let _ = writeln!(out, "| measure | value |\n|---|---:|");
    let _ = writeln!(
        out,
        "| changes offered per second | {:.0} |\n| delivered / created | {} / {} |\n| commit → receipt p50 ms | {:.1} |\n| commit → receipt p99 ms | {:.1} |\n| deliveries per second, burst of {BURST} | {:.0} |",
        measured.offered_per_sec,
        measured.delivered,
        measured.created,
        measured.p50_ms,
        measured.p99_ms,
        measured.burst_delivered_per_sec,
    );
    let met = |value: f64, target: f64| if value < target { "met" } else { "missed" };
    let _ = writeln!(
        out,
        "\nTargets at {STEADY_RATE} changes/s: p50 < {TARGET_P50_MS} ms ({}), p99 < {TARGET_P99_MS} ms ({}); every change delivered ({}).",
        met(measured.p50_ms, TARGET_P50_MS),
        met(measured.p99_ms, TARGET_P99_MS),
        if measured.delivered == measured.created {
            "met"
        } else {
            "missed"
        },
    );
    out
}
