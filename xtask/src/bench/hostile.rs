//! Bounded work under hostile load: what the costliest requests the API accepts (the longest
//! allowed audit search over every stored event, audit chain verifications, SAML metadata
//! near every limit) cost everyone else. Each case runs the hostile load and a bystander's
//! lookups together, and the bystander alone just before, so the report shows the difference.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::load::{Load, Measurement};
use super::server::{Server, http};
use super::{INGEST_BATCH, connect};

/// Events in the chain the verification case verifies (the issue's finding was at 100,000).
const CHAIN_EVENTS: u32 = 100_000;
/// Hostile clients of the search and verification cases (the findings used 8).
const HOSTILE_CONNECTIONS: u32 = 8;
/// Hostile clients uploading SAML metadata (the finding used 2; more than the cores).
const SAML_CONNECTIONS: u32 = 4;
/// The bystander's clients.
const BYSTANDER_CONNECTIONS: u32 = 16;

/// One hostile case: the hostile load, and the bystander alone and alongside it.
pub struct Hostile {
    hostile: Measurement,
    bystander_alone: Measurement,
    bystander: Measurement,
}

/// The files the hostile cases send.
pub struct HostileFiles {
    /// The longest search string the API accepts, over every tenant's events.
    worst_search: PathBuf,
    /// Incremental verification of the long chain.
    verify_incremental: PathBuf,
    /// Full verification of the long chain (its first part, 50,000 events).
    verify_full: PathBuf,
    /// The IdP collection the SAML case posts to.
    idps: PathBuf,
    /// The SAML case's request body.
    saml_body: PathBuf,
}

/// Six words of eighty letters that occur in no description: each costs an `ILIKE` per
/// candidate row, and together they are the most text search the query syntax allows
/// (audit::query's MAX_WORDS and MAX_Q_CHARS).
fn worst_search_string() -> String {
    (0..6_u8)
        .map(|word| {
            (0..80_u32)
                .map(|at| char::from(b'a' + ((at * 7 + u32::from(word) * 3) % 26) as u8))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("%20")
}

/// Metadata just under the 1 MiB request limit, every element at the attribute limit, that
/// passes every shape check and is well-formed, so each upload costs a full parse before
/// the registry finds it has no IDPSSODescriptor (422). Single quotes keep the JSON body the
/// size of the XML.
fn costly_saml_body() -> String {
    const BODY_BUDGET: usize = 1_000_000;
    let mut xml = String::from(
        r#"<md:EntityDescriptor xmlns:md='urn:oasis:names:tc:SAML:2.0:metadata' entityID='https://idp.example/saml'>"#,
    );
    let closing = "</md:EntityDescriptor>";
    for element in 0.. {
        let mut next = String::from("<md:Extensions");
        // The attribute limit reached (the attack was many attributes on one element).
        for attribute in 0..64 {
            let _ = write!(next, " a{attribute}='{}'", element % 10);
        }
        next.push_str("/>");
        if xml.len() + next.len() + closing.len() > BODY_BUDGET {
            break;
        }
        xml.push_str(&next);
    }
    xml.push_str(closing);
    serde_json::json!({"kind": "saml", "name": "Costly", "metadata_xml": xml}).to_string()
}

/// Stores a chain of [`CHAIN_EVENTS`] events for the first tenant through the API (so its
/// checkpoints are written as in production) and writes the request files.
pub async fn prepare(
    database_url: &str,
    key: &str,
    work: &Path,
    audit_events_stored: u32,
) -> Result<HostileFiles, String> {
    let mut conn = connect(database_url).await?;
    let (tenant,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM tenants ORDER BY slug LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .map_err(|error| format!("reading the first tenant: {error}"))?;
    let started = std::time::Instant::now();
    for batch in 0..CHAIN_EVENTS / INGEST_BATCH {
        let events: Vec<serde_json::Value> = (0..INGEST_BATCH)
            .map(|n| {
                serde_json::json!({
                    "action": "doc.read", "crud": "r", "group": {"id": tenant},
                    "actor": {"id": format!("u-{n}")},
                    "target": {"id": format!("d-{batch}-{n}"), "type": "document"},
                    "description": "chained bench event"
                })
            })
            .collect();
        let body = serde_json::Value::Array(events).to_string();
        let (status, answer) = http("POST", "/v1/audit/events", Some(key), Some(&body))?;
        if !(200..300).contains(&status) {
            return Err(format!("ingesting the chain: {status} {answer}"));
        }
    }
    eprintln!(
        "ingested a chain of {CHAIN_EVENTS} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let path = work.join(name);
        std::fs::write(&path, text)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        Ok(path)
    };
    let search = format!("/v1/audit/events?q={}&limit=50\n", worst_search_string());
    eprintln!(
        "the worst search runs over the {} events stored",
        audit_events_stored + CHAIN_EVENTS
    );
    Ok(HostileFiles {
        worst_search: write("worst-search.txt", search)?,
        verify_incremental: write(
            "verify-incremental.txt",
            format!("/v1/audit/verify?group_id={tenant}\n"),
        )?,
        verify_full: write(
            "verify-full.txt",
            format!("/v1/audit/verify?group_id={tenant}&mode=full\n"),
        )?,
        idps: write("idps-path.txt", format!("/v1/tenants/{tenant}/idps"))?,
        saml_body: write("saml-body.json", costly_saml_body())?,
    })
}

/// Runs `hostile` and the bystander's `paths` at once; first the bystander alone.
fn alongside(
    load: &Load,
    server: &Server,
    bystander_case: &str,
    bystander_paths: &Path,
    hostile: impl FnOnce() -> Result<Measurement, String> + Send,
) -> Result<Hostile, String> {
    let bystanders = load.with_connections(BYSTANDER_CONNECTIONS);
    let bystander_alone = bystanders.get(
        server,
        &format!("{bystander_case} (alone)"),
        None,
        bystander_paths,
    )?;
    let (hostile, bystander) = std::thread::scope(|scope| {
        let hostile = scope.spawn(hostile);
        let bystander = bystanders.get(
            server,
            &format!("{bystander_case} (alongside)"),
            None,
            bystander_paths,
        );
        let hostile = hostile
            .join()
            .unwrap_or_else(|_| Err("the hostile load panicked".to_owned()));
        (hostile, bystander)
    });
    Ok(Hostile {
        hostile: hostile?,
        bystander_alone,
        bystander: bystander?,
    })
}

/// Every hostile case; `lookups` are the bystander's tenant lookups.
pub fn measure(
    load: &Load,
    server: &Server,
    files: &HostileFiles,
    lookups: &Path,
    healthz: &Path,
) -> Result<Vec<Hostile>, String> {
    let searching = |case: &'static str, paths: &Path, connections: u32| {
        let paths = paths.to_owned();
        let load = load.with_connections(connections);
        move || load.get(server, case, None, &paths)
    };
    let idps = std::fs::read_to_string(&files.idps)
        .map_err(|error| format!("reading {}: {error}", files.idps.display()))?;
    let saml_body = files.saml_body.display().to_string();
    let uploading = || {
        let script = load.script("post-file.lua", include_str!("post_file.lua"))?;
        load.with_connections(SAML_CONNECTIONS).wrk(
            server,
            "SAML metadata of 1 MB, 64 attributes per element (422 by design)",
            None,
            &script,
            &[idps, saml_body],
            1,
        )
    };
    Ok(vec![
        alongside(
            load,
            server,
            "tenant by id",
            lookups,
            searching(
                "longest allowed audit search (6 words, 485 characters), every tenant",
                &files.worst_search,
                HOSTILE_CONNECTIONS,
            ),
        )?,
        alongside(
            load,
            server,
            "tenant by id",
            lookups,
            searching(
                "incremental chain verification, 100000 events",
                &files.verify_incremental,
                HOSTILE_CONNECTIONS,
            ),
        )?,
        alongside(
            load,
            server,
            "tenant by id",
            lookups,
            searching(
                "full chain verification, first 50000 of 100000 events",
                &files.verify_full,
                HOSTILE_CONNECTIONS,
            ),
        )?,
        alongside(load, server, "GET /healthz", healthz, uploading)?,
    ])
}

/// The report's section for the hostile cases.
pub fn render(cases: &[Hostile]) -> String {
    let mut out = String::from(
        "\n## Bounded work under hostile load\n\n\
         Each hostile load runs together with a bystander's requests \
         (16 connections); the bystander ran alone just before. Hostile non-2xx answers \
         are refusals by design (503 with Retry-After when two verifications already \
         run, 408 when a search reaches the statement timeout, 422 for the SAML case).\n\n\
         | hostile load | conns | rps | p50 ms | p99 ms | non-2xx | bystander | p50 ms alone → alongside | p99 ms alone → alongside | bystander errors |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for case in cases {
        let (hostile, alone, alongside) = (&case.hostile, &case.bystander_alone, &case.bystander);
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} → {:.2} | {:.2} → {:.2} | {} |",
            hostile.case,
            hostile.connections,
            hostile.rps,
            hostile.p50_ms,
            hostile.p99_ms,
            hostile.errors,
            alongside.case.trim_end_matches(" (alongside)"),
            alone.p50_ms,
            alongside.p50_ms,
            alone.p99_ms,
            alongside.p99_ms,
            alongside.errors,
        );
    }
    out
}
