//! Retraced's GraphQL search, as its clients send it: `search(query, last, before)` with
//! `totalCount`, `pageInfo { hasPreviousPage }` and `edges { cursor node { … } }`, the
//! node's fields those of Retraced's event. Parsing, validation and execution are
//! `async-graphql`'s; the search is the native one (the same filter, `q` syntax and
//! confinement), always within the project's product.
//!
//! A request GraphQL refuses (bad syntax, an unknown field, a bad search string or cursor)
//! is answered as GraphQL answers, 200 with `errors`; a failure of the server (the
//! database, a query timeout) is answered as every other route answers it, problem+json.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::{Context, EmptyMutation, EmptySubscription, ID, Object, SimpleObject};
use audit::{EventFilter, EventRow};
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use domain::Scope;
use serde_json::Value;
use utoipa::ToSchema;

use crate::extract::{ApiJson, Caller};
use crate::problem::{ApiError, Problem};
use crate::{AppState, pagination};

/// Events per page when `last` is not given.
const DEFAULT_PAGE: i32 = 20;
/// The most events per page.
const MAX_PAGE: i32 = 200;

type SearchSchema = async_graphql::Schema<Query, EmptyMutation, EmptySubscription>;

/// Built once: the schema is the same for every request. Depth and complexity are bounded
/// so that no document costs more than the search it asks for (the clients' query is depth
/// 6 and about 40 fields).
static SCHEMA: LazyLock<SearchSchema> = LazyLock::new(|| {
    async_graphql::Schema::build(Query, EmptyMutation, EmptySubscription)
        .limit_depth(12)
        .limit_complexity(400)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .finish()
});

/// What a search may see, and where a failure of the server is left for the handler.
struct SearchContext {
    filter: EventFilter,
    pool: storage::PgPool,
    statement_timeout: Duration,
    failure: Arc<Mutex<Option<ApiError>>>,
}

/// The root of the schema.
pub(crate) struct Query;

#[Object]
impl Query {
    /// Events matching a Retraced search string, newest first: `last` per page (default
    /// 20, at most 200), older than the cursor `before` (empty: from the newest).
    async fn search(
        &self,
        context: &Context<'_>,
        query: String,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<EventsConnection> {
        let scope = context.data::<SearchContext>()?;
        let mut filter = scope.filter.clone();
        audit::apply_query(&query, &mut filter)
            .map_err(|error| async_graphql::Error::new(format!("query: {error}")))?;
        let size = last.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&size) {
            return Err(async_graphql::Error::new(format!(
                "last: must be between 1 and {MAX_PAGE}"
            )));
        }
        let before = before
            .filter(|cursor| !cursor.is_empty())
            .map(|cursor| pagination::decode_as::<i64>(&cursor))
            .transpose()
            .map_err(|_| async_graphql::Error::new("before: not a cursor this service issued"))?;
        let limit = i64::from(size);
        let searched = audit::search_counted(
            &scope.pool,
            &filter,
            before,
            limit + 1,
            scope.statement_timeout,
        )
        .await;
        let (mut rows, total) = match searched {
            Ok(found) => found,
            Err(error) => {
                *scope.failure.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(ApiError::from(error));
                return Err(async_graphql::Error::new("the search failed"));
            }
        };
        let has_older = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        Ok(EventsConnection {
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            page_info: PageInfo {
                has_previous_page: has_older,
                has_next_page: before.is_some(),
            },
            edges: rows.into_iter().map(EventEdge::from).collect(),
        })
    }
}

/// A page of a search.
#[derive(SimpleObject)]
struct EventsConnection {
    /// How many events match, on every page.
    total_count: i32,
    /// Whether there are more.
    page_info: PageInfo,
    /// The events of this page.
    edges: Vec<EventEdge>,
}

/// Retraced's paging flags: pages go back in time.
#[derive(SimpleObject)]
struct PageInfo {
    /// Older events match (pass the last edge's cursor as `before`).
    has_previous_page: bool,
    /// Newer events match (this page was asked for with `before`).
    has_next_page: bool,
}

/// One event and its cursor.
#[derive(SimpleObject)]
struct EventEdge {
    /// Pass as `before` for the events older than this one.
    cursor: String,
    /// The event.
    node: EventNode,
}

/// A key and its value, as Retraced lists fields.
#[derive(SimpleObject)]
struct Field {
    /// The key.
    key: String,
    /// Its value.
    value: String,
}

/// The tenant.
#[derive(SimpleObject)]
struct GroupNode {
    /// As recorded (the tenant's id, or the slug the product sent).
    id: Option<String>,
    /// Display name.
    name: Option<String>,
}

/// Who.
#[derive(SimpleObject)]
struct ActorNode {
    /// Id in the product.
    id: Option<String>,
    /// Display name.
    name: Option<String>,
    /// Link.
    href: Option<String>,
    /// Extra fields.
    fields: Vec<Field>,
}

/// To what.
#[derive(SimpleObject)]
struct TargetNode {
    /// Id in the product.
    id: Option<String>,
    /// Display name.
    name: Option<String>,
    /// Link.
    href: Option<String>,
    /// Kind.
    #[graphql(name = "type")]
    kind: Option<String>,
    /// Extra fields.
    fields: Vec<Field>,
}

/// How a viewer shows the event.
#[derive(SimpleObject)]
struct Display {
    /// The description, or who did what to what, in Markdown.
    markdown: String,
}

/// An event, with Retraced's field names.
#[derive(SimpleObject)]
#[graphql(rename_fields = "snake_case")]
struct EventNode {
    /// Id, as `event` answered it.
    id: ID,
    /// What happened.
    action: String,
    /// c, r, u or d.
    crud: String,
    /// A sentence for people.
    description: Option<String>,
    /// The tenant.
    group: GroupNode,
    /// Who.
    actor: ActorNode,
    /// To what.
    target: TargetNode,
    /// How to show it.
    display: Display,
    /// When the registry received it (RFC 3339).
    received: String,
    /// When it happened (RFC 3339).
    created: String,
    /// When it happened: Retraced's `created`, else `received` (RFC 3339).
    canonical_time: String,
    /// Whether the action failed.
    is_failure: bool,
    /// Whether nobody was signed in.
    is_anonymous: bool,
    /// From where.
    source_ip: Option<String>,
    /// Not recorded (the registry does not geolocate): always null.
    country: Option<String>,
    /// Not recorded: always null.
    loc_subdiv1: Option<String>,
    /// Not recorded: always null.
    loc_subdiv2: Option<String>,
    /// Reporting component.
    component: Option<String>,
    /// Product version.
    version: Option<String>,
    /// Extra fields.
    fields: Vec<Field>,
    /// The product's id for it.
    external_id: Option<String>,
    /// Retraced's metadata.
    metadata: Vec<Field>,
}

fn fields(value: &Value) -> Vec<Field> {
    let mut fields: Vec<Field> = value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| Field {
            key: key.clone(),
            value: value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        })
        .collect();
    fields.sort_by(|left, right| left.key.cmp(&right.key));
    fields
}

fn markdown(row: &EventRow) -> String {
    if let Some(description) = &row.description {
        return description.clone();
    }
    let name = |name: &Option<String>, id: &Option<String>| name.clone().or_else(|| id.clone());
    let mut text = String::new();
    if let Some(actor) = name(&row.actor_name, &row.actor_id) {
        text.push_str(&format!("**{actor}** "));
    }
    text.push_str(&row.action);
    if let Some(target) = name(&row.target_name, &row.target_id) {
        text.push_str(&format!(" **{target}**"));
    }
    text
}

impl From<EventRow> for EventEdge {
    fn from(row: EventRow) -> Self {
        let cursor = pagination::encode(row.created_at, row.id);
        let created = row.created_at.to_rfc3339();
        let node = EventNode {
            id: ID::from(row.id.to_string()),
            display: Display {
                markdown: markdown(&row),
            },
            action: row.action,
            crud: row.crud,
            description: row.description,
            group: GroupNode {
                id: row.group_id,
                name: row.group_name,
            },
            actor: ActorNode {
                id: row.actor_id,
                name: row.actor_name,
                href: row.actor_href,
                fields: fields(&row.actor_fields.0),
            },
            target: TargetNode {
                id: row.target_id,
                name: row.target_name,
                href: row.target_href,
                kind: row.target_type,
                fields: fields(&row.target_fields.0),
            },
            received: row.received_at.to_rfc3339(),
            canonical_time: created.clone(),
            created,
            is_failure: row.is_failure,
            is_anonymous: row.is_anonymous,
            source_ip: row.source_ip,
            country: None,
            loc_subdiv1: None,
            loc_subdiv2: None,
            component: row.component,
            version: row.version,
            fields: fields(&row.fields.0),
            external_id: row.external_id,
            metadata: fields(&row.metadata.0),
        };
        EventEdge { cursor, node }
    }
}

/// A GraphQL request over HTTP (the GraphQL-over-HTTP JSON body).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct GraphQlRequest {
    /// The document, e.g. `query Search($query: String!, $last: Int, $before: String) {
    /// search(query: $query, last: $last, before: $before) { totalCount … } }`.
    query: String,
    /// Its variables: `query` (a Retraced search string), `last`, `before`.
    #[schema(value_type = Option<Object>)]
    variables: Option<Value>,
    /// Which operation of the document to run.
    #[serde(rename = "operationName")]
    #[schema(rename = "operationName")]
    operation_name: Option<String>,
}

/// A GraphQL answer: `data`, and `errors` when GraphQL refused part of the request.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct GraphQlResponse {
    /// `{"search": {"totalCount", "pageInfo", "edges"}}`, null when the request was refused.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// What GraphQL refused (a syntax error, an unknown field, a bad search string or
    /// cursor), each with a `message`.
    #[schema(value_type = Option<Vec<Object>>)]
    errors: Option<Value>,
}

/// Searches the project's audit events with Retraced's GraphQL `search`, as the clients'
/// `query` sends it. A tenant key sees its own tenant only.
#[utoipa::path(post, path = "/auditlog/publisher/v1/project/{projectId}/graphql",
    operation_id = "retraced_graphql", tag = "retraced",
    security(("retraced_token" = ["audit:read"]), ("bearer" = ["audit:read"])),
    params(("projectId" = String, Path, description = "The Retraced project: the product of the caller's API key")),
    request_body(content = GraphQlRequest, description = "A GraphQL request"),
    responses((status = 200, description = "The GraphQL answer (errors inside it when GraphQL refused the request)", body = GraphQlResponse),
    (status = 403, description = "Missing audit:read, or the key's product is not projectId", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "The body is not a GraphQL request", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn search(
    State(state): State<AppState>,
    Path(project_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    super::for_project(&caller, &project_id, Scope::AuditRead)?;
    if !body.get("query").is_some_and(Value::is_string) {
        return Err(ApiError::invalid_field(
            "/query",
            "a GraphQL request has its document as a string in query",
        ));
    }
    let request: async_graphql::Request = crate::extract::from_json_value(body)?;
    let failure = Arc::new(Mutex::new(None));
    let scope = SearchContext {
        filter: EventFilter {
            tenant_id: caller.principal.tenant_id,
            product: Some(project_id),
            ..EventFilter::default()
        },
        pool: state.pool.clone(),
        statement_timeout: state.settings.statement_timeout(),
        failure: Arc::clone(&failure),
    };
    let answer = SCHEMA.execute(request.data(scope)).await;
    if let Some(error) = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(error);
    }
    Ok(Json(answer).into_response())
}
