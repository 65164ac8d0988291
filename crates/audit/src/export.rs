//! Events as the API shows them (Retraced's shape), and export as NDJSON or CSV, read a
//! page at a time so memory stays flat whatever the number of events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use storage::audit::{EventFilter, EventRow};
use utoipa::ToSchema;

/// The tenant of an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupView {
    /// Tenant id, as recorded.
    pub id: Option<String>,
    /// Name, as sent.
    pub name: Option<String>,
}

/// Who did it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActorView {
    /// Id in the product.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Link.
    pub href: Option<String>,
    /// Extra string fields.
    #[schema(value_type = Object)]
    pub fields: Value,
}

/// What it was done to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetView {
    /// Id in the product.
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Link.
    pub href: Option<String>,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Extra string fields.
    #[schema(value_type = Object)]
    pub fields: Value,
}

/// A stored event, in Retraced's shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    /// Id, in order of arrival.
    pub id: i64,
    /// What happened.
    pub action: String,
    /// c, r, u or d.
    pub crud: String,
    /// The tenant.
    pub group: GroupView,
    /// Who.
    pub actor: ActorView,
    /// To what.
    pub target: TargetView,
    /// The reporting product.
    pub product: Option<String>,
    /// Reporting component.
    pub component: Option<String>,
    /// Product version.
    pub version: Option<String>,
    /// From where.
    pub source_ip: Option<String>,
    /// A sentence for people.
    pub description: Option<String>,
    /// Whether it failed.
    pub is_failure: bool,
    /// Whether nobody was signed in.
    pub is_anonymous: bool,
    /// Extra string fields.
    #[schema(value_type = Object)]
    pub fields: Value,
    /// Retraced's metadata (string fields kept apart from `fields`).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The product's id for it.
    pub external_id: Option<String>,
    /// When it happened.
    pub created: DateTime<Utc>,
    /// When the registry received it.
    pub received: DateTime<Utc>,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        EventView {
            id: row.id,
            action: row.action,
            crud: row.crud,
            group: GroupView {
                id: row.group_id,
                name: row.group_name,
            },
            actor: ActorView {
                id: row.actor_id,
                name: row.actor_name,
                href: row.actor_href,
                fields: row.actor_fields.0,
            },
            target: TargetView {
                id: row.target_id,
                name: row.target_name,
                href: row.target_href,
                kind: row.target_type,
                fields: row.target_fields.0,
            },
            product: row.product,
            component: row.component,
            version: row.version,
            source_ip: row.source_ip,
            description: row.description,
            is_failure: row.is_failure,
            is_anonymous: row.is_anonymous,
            fields: row.fields.0,
            metadata: if row.metadata.0.is_null() {
                Value::Object(serde_json::Map::new())
            } else {
                row.metadata.0
            },
            external_id: row.external_id,
            created: row.created_at,
            received: row.received_at,
        }
    }
}

/// How exported events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON event per line, as the search returns them.
    Ndjson,
    /// RFC 4180 CSV with a header row; field maps as JSON text.
    Csv,
}

const CSV_HEADER: &str = "id,created,received,product,component,version,group_id,group_name,\
action,crud,actor_id,actor_name,target_id,target_type,target_name,source_ip,description,\
is_failure,is_anonymous,external_id,fields\r\n";

impl ExportFormat {
    /// The media type of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
        }
    }

    fn write(self, row: EventRow, out: &mut String) {
        match self {
            ExportFormat::Ndjson => {
                let view = EventView::from(row);
                out.push_str(&serde_json::to_string(&view).unwrap_or_default());
                out.push('\n');
            }
            ExportFormat::Csv => {
                let text = |value: Option<String>| value.unwrap_or_default();
                let cells = [
                    row.id.to_string(),
                    row.created_at.to_rfc3339(),
                    row.received_at.to_rfc3339(),
                    text(row.product),
                    text(row.component),
                    text(row.version),
                    text(row.group_id),
                    text(row.group_name),
                    row.action,
                    row.crud,
                    text(row.actor_id),
                    text(row.actor_name),
                    text(row.target_id),
                    text(row.target_type),
                    text(row.target_name),
                    text(row.source_ip),
                    text(row.description),
                    row.is_failure.to_string(),
                    row.is_anonymous.to_string(),
                    text(row.external_id),
                    row.fields.0.to_string(),
                ];
                out.push_str(&csv_row(cells.iter().map(|cell| defused(cell))));
            }
        }
    }
}

/// Characters that make a spreadsheet read a cell as a formula (with their full-width
/// forms, which some locales treat alike).
const FORMULA_STARTS: [char; 8] = [
    '=', '+', '-', '@', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
];

/// Where a spreadsheet may split one CSV cell into several: list separators of every
/// locale (`,` and `;`), tabs and line breaks.
const SEPARATORS: [char; 5] = [',', ';', '\t', '\r', '\n'];

/// Whether `text` starts a formula once leading blanks (spaces, tabs, line breaks, other
/// control characters), which spreadsheets skip, are left out.
fn starts_formula(text: &str) -> bool {
    text.trim_start_matches(|c: char| c.is_whitespace() || c.is_control())
        .starts_with(FORMULA_STARTS)
}

/// A cell a spreadsheet shows as text (CSV injection): every part that would start a
/// formula gets a `'` in front, the cell itself and each part after a separator (a `;`
/// locale splits `a;=1+1` into `a` and a formula, even inside quotes for some importers).
fn defused(value: &str) -> String {
    let mut defused = String::with_capacity(value.len() + 2);
    let mut part_starts = true;
    for (index, character) in value.char_indices() {
        if part_starts && starts_formula(&value[index..]) {
            defused.push('\'');
        }
        defused.push(character);
        part_starts = SEPARATORS.contains(&character);
    }
    defused
}

/// One CSV row (RFC 4180, CRLF) written by the maintained `csv` crate, every cell quoted:
/// a `;` or a tab inside a cell then splits nothing, in any locale.
fn csv_row<'a>(cells: impl Iterator<Item = String> + 'a) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    let written = writer
        .write_record(cells)
        .map_err(|error| error.to_string())
        .and_then(|()| writer.into_inner().map_err(|error| error.to_string()))
        .and_then(|bytes| String::from_utf8(bytes).map_err(|error| error.to_string()));
    written.unwrap_or_else(|error| {
        // Writing to memory fails only on a bug; the row is left out, the export goes on.
        tracing::error!(%error, "an audit event could not be written as CSV");
        String::new()
    })
}

/// Events read per round trip while exporting; each becomes one chunk of the body.
pub const EXPORT_PAGE: i64 = 1000;

/// Where a page ends: the position the next page starts after, when the page was full.
type Next = Option<(DateTime<Utc>, i64)>;

fn chunk(format: ExportFormat, rows: Vec<EventRow>) -> (String, Next) {
    let next = (i64::try_from(rows.len()).unwrap_or(i64::MAX) == EXPORT_PAGE)
        .then(|| rows.last().map(|row| (row.created_at, row.id)))
        .flatten();
    let mut text = String::new();
    for row in rows {
        format.write(row, &mut text);
    }
    (text, next)
}

/// Whether an export's stream, once it has ended, carried every matching event. Shared
/// with the stream, which sets it when a later page fails.
#[derive(Debug, Clone, Default)]
pub struct ExportOutcome(Arc<AtomicBool>);

impl ExportOutcome {
    /// Whether the stream ended early, after its last whole page, because a page failed.
    pub fn cut_short(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The events matching `filter`, newest first, as chunks of `format` text, and the outcome
/// the caller reads once the stream has ended (an answer's trailer says it). Each chunk is
/// one page read with its own query (keyset pagination), so no transaction or cursor stays
/// open while a slow client reads; each query is cancelled after `statement_timeout`.
///
/// The first page is read before this returns, so a failure then is the caller's to answer
/// with a status. A later page that fails ends the stream after the last whole page (every
/// line and row complete) and is logged: the answer's status and headers are sent by then.
pub async fn export(
    pool: PgPool,
    filter: EventFilter,
    format: ExportFormat,
    statement_timeout: Duration,
) -> Result<(impl Stream<Item = String> + Send + 'static, ExportOutcome), sqlx::Error> {
    let first = crate::search(&pool, &filter, None, EXPORT_PAGE, statement_timeout).await?;
    let outcome = ExportOutcome::default();
    let cut_short = outcome.clone();
    let (first, next) = chunk(format, first);
    let start = (format == ExportFormat::Csv).then(|| CSV_HEADER.to_owned());
    let rest = futures::stream::unfold(next, move |position| {
        let pool = pool.clone();
        let filter = filter.clone();
        let cut_short = cut_short.clone();
        async move {
            let before = position?;
            match crate::search(&pool, &filter, Some(before), EXPORT_PAGE, statement_timeout).await
            {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => Some(chunk(format, rows)),
                Err(error) => {
                    tracing::error!(%error, "audit export cut short after its last whole page");
                    cut_short.0.store(true, Ordering::SeqCst);
                    None
                }
            }
        }
    });
    let chunks = futures::StreamExt::chain(
        futures::stream::iter(
            start
                .into_iter()
                .chain(Some(first).filter(|text| !text.is_empty())),
        ),
        rest,
    );
    Ok((chunks, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_would_start_a_formula_are_defused() {
        for (cell, shown) in [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "a,b"),
            ("say \"hi\"", "say \"hi\""),
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@cmd", "'@cmd"),
            (" =1+1", "' =1+1"),
            ("   @SUM(A1)", "'   @SUM(A1)"),
            ("\t=1", "'\t'=1"),
            ("\n=1", "'\n'=1"),
            ("\r\n+1", "'\r'\n'+1"),
            ("\u{b}=1", "'\u{b}=1"),
            ("\u{a0}=1", "'\u{a0}=1"),
            ("\u{ff1d}1+1", "'\u{ff1d}1+1"),
            ("a;=1+1", "a;'=1+1"),
            ("a; =HYPERLINK(x)", "a;' =HYPERLINK(x)"),
            ("a,-2", "a,'-2"),
            ("x;y", "x;y"),
            ("a=b", "a=b"),
            ("a - b", "a - b"),
            ("e-mail@example.com", "e-mail@example.com"),
        ] {
            assert_eq!(defused(cell), shown, "{cell:?}");
        }
    }

    #[test]
    fn a_row_reads_back_as_its_defused_cells_with_every_cell_quoted() {
        let cells = [
            "say \"hi\", then left",
            "=HYPERLINK(\"x\")",
            "line\nbreak",
            "x;y",
            "",
        ];
        let row = csv_row(cells.iter().map(|cell| defused(cell)));
        assert!(row.ends_with("\r\n"));
        assert!(
            row.starts_with("\"say \"\"hi\"\", then left\",\"'=HYPERLINK"),
            "{row}"
        );
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(row.as_bytes());
        let read: Vec<String> = reader
            .records()
            .next()
            .expect("one row")
            .expect("well-formed")
            .iter()
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = cells.iter().map(|cell| defused(cell)).collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn the_csv_header_names_every_cell() {
        let mut line = String::new();
        ExportFormat::Csv.write(EventRow::default(), &mut line);
        let text = format!("{CSV_HEADER}{line}");
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let header = reader.headers().expect("a header").len();
        let cells = reader
            .records()
            .next()
            .expect("a row")
            .expect("well-formed")
            .len();
        assert_eq!(cells, header);
    }
}
