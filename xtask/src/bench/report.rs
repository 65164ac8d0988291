//! The report `cargo xtask bench` writes: the machine, the table of cases and each target
//! met or missed.

#[allow(clippy::wildcard_imports)]
use super::*;
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or_else(String::new, |kilobytes| {
            format!(", {:.0} GiB RAM", kilobytes / 1024.0 / 1024.0)
        });
    format!("{cores} cores ({model}){memory}")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The measurement of `case` (its name, or the start of it up to a word), at `tenants`: "by
/// slug, uniform" is not "by slug, uniform, cache off".
fn find<'a>(
    results: &'a [Measurement],
    case: &str,
    tenants: Option<u32>,
) -> Option<&'a Measurement> {
    results.iter().find(|result| {
        let names_it = result
            .case
            .strip_prefix(case)
            .is_some_and(|rest| !rest.starts_with(','));
        names_it && (tenants.is_none() || result.tenants == tenants)
    })
}

fn verdict(met: bool, text: String) -> String {
    format!("| {} | {text} |\n", if met { "met" } else { "**missed**" })
}

pub(super) fn render(
    options: &Options,
    results: &[Measurement],
    pgbench_tps: Option<f64>,
    took: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench{}` on {} — {}. Server (release build, pool of {POOL_CONNECTIONS} \
         connections), PostgreSQL 15 and the load generator (`wrk -t2 -c{}`, {} s per case) share \
         the machine. The cached cases run after a warm-up pass over every slug; \"cache off\" \
         is a second server with `TENANT_CACHE_ENTRIES=0`. The run took {:.0} s.\n",
        if options.quick { " --quick" } else { "" },
        today(),
        machine(),
        options.connections,
        options.duration,
        took.as_secs_f64(),
    );
    let healthz = |tenants: Option<u32>| {
        find(results, "GET /healthz", tenants).map_or(1.0, |result| result.rps.max(1.0))
    };
    let database_ceiling = pgbench_tps.map_or_else(String::new, |tps| {
        format!(
            "; `pgbench -S -c {POOL_CONNECTIONS} -j 2` {tps:.0} tps (database, select-only, the \
             server's pool size)"
        )
    });
    let _ = writeln!(
        out,
        "Ceilings measured in the same run: `GET /healthz` under the same load as the cases, \
         once per tenant count (each case's share of it is in the last column){database_ceiling}; \
         and a plain peer of the miss path, `xtask/peer` (Go `net/http` + `pgx`, one \
         SELECT per lookup, no cache, a pool of {POOL_CONNECTIONS}), over the same database \
         under the same load.\n"
    );
    let _ = writeln!(
        out,
        "| case | tenants | rps | p50 ms | p99 ms | errors | server RSS MB | % of /healthz |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for result in results {
        let rate = if result.per_request > 1 {
            format!(
                "{:.0} ({:.0} events/s)",
                result.rps,
                result.rps * f64::from(result.per_request)
            )
        } else {
            format!("{:.0}", result.rps)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {rate} | {:.2} | {:.2} | {} | {} | {} |",
            result.case,
            result
                .tenants
                .map_or_else(|| "–".to_owned(), |count| count.to_string()),
            result.p50_ms,
            result.p99_ms,
            result.errors,
            result
                .rss_mb
                .map_or_else(|| "–".to_owned(), |rss| format!("{rss:.0}")),
            find(results, "GET /healthz", result.tenants).map_or_else(
                || "–".to_owned(),
                |ceiling| format!("{:.0}%", result.rps / ceiling.rps.max(1.0) * 100.0)
            ),
        );
    }
    let _ = writeln!(
        out,
        "\n## Targets\n\n| | target and measurement |\n|---|---|"
    );
    let first = options.tenants.first().copied();
    let last = options.tenants.last().copied();
    for &tenants in &options.tenants {
        if let Some(hot) = find(results, "by slug, hot", Some(tenants)) {
            let share = hot.rps / healthz(Some(tenants));
            out.push_str(&verdict(
                share >= 0.5 && hot.p99_ms < 10.0,
                format!(
                    "cached lookup (by slug, hot) at {tenants} tenants ≥ 50% of /healthz with p99 < 10 ms: {:.0}% of /healthz, p99 {:.2} ms",
                    share * 100.0,
                    hot.p99_ms
                ),
            ));
        }
    }
    for &tenants in &options.tenants {
        if let Some(me) = find(results, "GET /v1/me", Some(tenants)) {
            let share = me.rps / healthz(Some(tenants));
            out.push_str(&verdict(
                share >= 0.8,
                format!(
                    "API-key-authenticated request ≥ 80% of the unauthenticated rate (every tenant lookup needs a principal, so this compares `GET /v1/me` — verification cache, no query — with `GET /healthz` measured just before it, at {tenants} tenants): {:.1}%",
                    share * 100.0
                ),
            ));
        }
    }
    for &tenants in &options.tenants {
        if let Some((uncached, pgbench_tps)) =
            find(results, "by id, uniform, cache off", Some(tenants)).zip(pgbench_tps)
        {
            let share = uncached.rps / pgbench_tps.max(1.0);
            out.push_str(&verdict(
                share >= 0.7,
                format!(
                    "uncached lookup at {tenants} tenants ≥ 70% of pgbench -S at {POOL_CONNECTIONS} connections: {:.0}% ({:.0} rps vs {pgbench_tps:.0} tps)",
                    share * 100.0,
                    uncached.rps
                ),
            ));
        }
    }
    let scales = first.zip(last).filter(|(small, large)| small != large);
    if let Some((small, large)) = scales.and_then(|(small, large)| {
        find(results, "by slug, uniform", Some(small)).zip(find(
            results,
            "by slug, uniform",
            Some(large),
        ))
    }) {
        let ratio = large.rps / small.rps.max(1.0);
        out.push_str(&verdict(
            ratio >= 0.8,
            format!(
                "lookups at {} tenants within 20% of the rate at {}: {:.0}% ({:.0} vs {:.0} rps, by slug, uniform)",
                large.tenants.unwrap_or_default(),
                small.tenants.unwrap_or_default(),
                ratio * 100.0,
                large.rps,
                small.rps
            ),
        ));
    }
    for &tenants in &options.tenants {
        let Some(plain) = find(results, peer::CASE, Some(tenants)) else {
            continue;
        };
        for (case, factor) in [
            ("by slug, uniform, cache off", 1.2),
            ("by slug, uniform", 3.0),
        ] {
            if let Some(ours) = find(results, case, Some(tenants)) {
                let ratio = ours.rps / plain.rps.max(1.0);
                out.push_str(&verdict(
                    ratio >= factor,
                    format!(
                        "{case} at {tenants} tenants ≥ {factor}× the plain Go peer: {ratio:.2}× ({:.0} vs {:.0} rps)",
                        ours.rps, plain.rps
                    ),
                ));
            }
        }
    }
    let peak = results
        .iter()
        .filter(|result| !result.case.starts_with(peer::CASE))
        .filter_map(|result| result.rss_mb)
        .fold(0.0, f64::max);
    out.push_str(&verdict(
        peak < 150.0,
        format!("server RSS under load < 150 MB: at most {peak:.0} MB"),
    ));
    out
}
