//! What each step does. Every step is idempotent: it makes what is missing and applies only
//! what is pending, so a retry, or a run cut off and taken up again, is safe.

use chrono::{DateTime, Utc};
use domain::provisioning::{self, Plan, Step, Teardown};
use registry::provisioning::runs::{Effect, Run};
use serde_json::json;
use sqlx::PgConnection;
use storage::provisioning::StepDone;
use storage::tenant_schemas::{self, Migration, SeedTenant};

use crate::backends::Backends;
use crate::backup::Subject;
use crate::clusters::isolation_label;
use crate::{Provisioner, StepError};

/// How a step ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done, with what it left and made.
    Done(StepDone, Effect),
    /// The product answered 202: the run waits for its report.
    WaitForReport,
}

fn done(step: StepDone) -> Outcome {
    Outcome::Done(step, Effect::Nothing)
}

/// Where a run's tenant data is: the cluster, schema or database, its name, and the schema
/// its tables are in.
struct Place {
    url: String,
    isolation: &'static str,
    name: String,
    /// Where the step's connections are recorded.
    backends: Backends,
}

impl Place {
    /// The schema the product's tables live in.
    fn schema(&self) -> &str {
        if self.isolation == "database" {
            "public"
        } else {
            &self.name
        }
    }

    async fn connect(&self) -> Result<PgConnection, StepError> {
        let database = (self.isolation == "database").then_some(self.name.as_str());
        self.backends.connect(&self.url, database).await
    }

    /// A connection to the cluster's own database (where schemas and databases are made).
    async fn connect_cluster(&self) -> Result<PgConnection, StepError> {
        self.backends.connect(&self.url, None).await
    }

    async fn exists(&self) -> Result<bool, StepError> {
        let mut conn = self.connect_cluster().await?;
        Ok(if self.isolation == "database" {
            tenant_schemas::database_exists(&mut conn, &self.name).await?
        } else {
            tenant_schemas::schema_exists(&mut conn, &self.name).await?
        })
    }
}

async fn place(
    provisioner: &Provisioner,
    run: &Run,
    plan: &Plan,
    backends: &Backends,
) -> Result<Option<Place>, StepError> {
    let Some((isolation, reference)) = plan.database() else {
        return Ok(None);
    };
    let url = provisioner
        .clusters
        .cluster_url(&run.row.product_id, reference)
        .await?;
    Ok(Some(Place {
        url,
        isolation: isolation_label(isolation),
        name: provisioning::tenant_object_name(run.row.tenant_id),
        backends: backends.clone(),
    }))
}

async fn required_place(
    provisioner: &Provisioner,
    run: &Run,
    backends: &Backends,
) -> Result<Place, StepError> {
    place(provisioner, run, &run.plan, backends)
        .await?
        .ok_or_else(|| StepError::Config("the plan has no database step".to_owned()))
}

/// Runs step `step` of `run`'s plan.
pub async fn provision(
    provisioner: &Provisioner,
    run: &Run,
    step: &Step,
    now: DateTime<Utc>,
    backends: &Backends,
) -> Result<Outcome, StepError> {
    match step {
        Step::Database { .. } => {
            let place = required_place(provisioner, run, backends).await?;
            let mut conn = place.connect_cluster().await?;
            if place.isolation == "database" {
                tenant_schemas::create_database(&mut conn, &place.name).await?;
            } else {
                tenant_schemas::create_schema(&mut conn, &place.name).await?;
            }
            Ok(done(StepDone {
                isolation: Some(place.isolation.to_owned()),
                object_name: Some(place.name),
                ..StepDone::default()
            }))
        }
        Step::Migrations => migrate(provisioner, run, backends).await,
        Step::Seed { statements } => {
            let place = required_place(provisioner, run, backends).await?;
            let mut conn = place.connect().await?;
            tenant_schemas::ensure_history(&mut conn, place.schema()).await?;
            let tenant = SeedTenant {
                id: run.row.tenant_id,
                slug: &run.tenant_slug,
                name: &run.tenant_name,
            };
            tenant_schemas::seed_once(
                &mut conn,
                place.schema(),
                statements,
                tenant,
                provisioner.config.limits,
            )
            .await?;
            Ok(done(StepDone {
                seeded_at: Some(now),
                ..StepDone::default()
            }))
        }
        Step::Roles { roles } => {
            let names: Vec<String> = roles.iter().map(|role| role.name.clone()).collect();
            let taken = registry::provisioning::roles_taken(
                &provisioner.pool,
                run.row.tenant_id,
                &run.row.product_id,
                &names,
            )
            .await?;
            if let Some(refusal) = roles_refusal(&taken) {
                return Err(StepError::Roles(refusal));
            }
            Ok(Outcome::Done(
                StepDone {
                    roles_created_at: Some(now),
                    ..StepDone::default()
                },
                Effect::CreateRoles(roles.clone()),
            ))
        }
        Step::Hook { url, secret } => {
            let place = place(provisioner, run, &run.plan, backends).await?;
            hook(
                provisioner,
                run,
                provisioning::PROVISIONING_REQUESTED,
                url,
                secret.as_ref(),
                place.as_ref(),
                now,
            )
            .await
        }
    }
}

/// Why default roles whose names are `taken` (by name, with the product that made each, or
/// `None` for the tenant's own) cannot be made: a role name means one set of permissions in
/// a tenant, so another's role is neither overwritten nor silently skipped.
fn roles_refusal(taken: &[(String, Option<String>)]) -> Option<String> {
    let owners: Vec<String> = taken
        .iter()
        .map(|(name, owner)| match owner {
            Some(product) => format!("\"{name}\" is product {product}'s"),
            None => format!("\"{name}\" is the tenant's own"),
        })
        .collect();
    (!owners.is_empty()).then(|| {
        format!(
            "the tenant has a role of that name already: {}; give this product's default roles names of their own (such as \"<product>-admin\")",
            owners.join(", ")
        )
    })
}

/// Applies the product's registered migrations not yet applied in the tenant's schema.
pub async fn migrate(
    provisioner: &Provisioner,
    run: &Run,
    backends: &Backends,
) -> Result<Outcome, StepError> {
    let place = required_place(provisioner, run, backends).await?;
    let registered =
        storage::product_migrations::list_on_pool(&provisioner.pool, &run.row.product_id).await?;
    let mut conn = place.connect().await?;
    let schema = place.schema();
    tenant_schemas::ensure_history(&mut conn, schema).await?;
    let applied = tenant_schemas::applied(&mut conn, schema).await?;
    for (version, checksum) in &applied {
        let changed = registered
            .iter()
            .find(|migration| migration.version == *version)
            .is_some_and(|migration| migration.checksum != *checksum);
        if changed {
            return Err(StepError::Migration(format!(
                "migration {version} applied in this schema differs from the registered one"
            )));
        }
    }
    let mut last = applied.last().map(|(version, _)| *version);
    for migration in &registered {
        if applied
            .iter()
            .any(|(version, _)| *version == migration.version)
        {
            continue;
        }
        let apply = Migration {
            version: migration.version,
            name: &migration.name,
            checksum: &migration.checksum,
            sql: &migration.sql,
        };
        tenant_schemas::apply(&mut conn, schema, apply, provisioner.config.limits)
            .await
            .map_err(|error| {
                StepError::Migration(format!(
                    "migration {} ({}) failed: {}",
                    migration.version,
                    migration.name,
                    database_message(&error)
                ))
            })?;
        last = Some(migration.version);
    }
    Ok(done(StepDone {
        migration_version: last,
        ..StepDone::default()
    }))
}

/// What PostgreSQL said, without anything of the connection.
fn database_message(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(database) => format!(
            "{} (SQLSTATE {})",
            database.message(),
            database.code().unwrap_or_default()
        ),
        _ => "the connection failed".to_owned(),
    }
}

/// Runs step `step` of `run`'s teardown.
pub async fn teardown(
    provisioner: &Provisioner,
    run: &Run,
    step: &Teardown,
    backup_id: Option<uuid::Uuid>,
    now: DateTime<Utc>,
    backends: &Backends,
) -> Result<Outcome, StepError> {
    match step {
        Teardown::Hook { url, secret } => {
            let place = place(provisioner, run, &run.plan, backends).await?;
            hook(
                provisioner,
                run,
                provisioning::DEPROVISIONING_REQUESTED,
                url,
                secret.as_ref(),
                place.as_ref(),
                now,
            )
            .await
        }
        Teardown::Backup => {
            let place = required_place(provisioner, run, backends).await?;
            if !place.exists().await? {
                return Ok(done(StepDone::default()));
            }
            let subject = Subject {
                url: &place.url,
                isolation: place.isolation,
                name: &place.name,
                tenant_id: run.row.tenant_id,
                tenant_slug: &run.tenant_slug,
                product_id: &run.row.product_id,
            };
            let backup = provisioner.backups.take(subject, now).await?;
            Ok(Outcome::Done(
                StepDone {
                    backup_id: Some(backup.id),
                    ..StepDone::default()
                },
                Effect::Backup(Box::new(backup)),
            ))
        }
        Teardown::Drop => {
            let place = required_place(provisioner, run, backends).await?;
            if !place.exists().await? {
                return Ok(done(StepDone::default()));
            }
            let kept = match backup_id {
                Some(id) => {
                    let mut conn = provisioner.pool.acquire().await?;
                    storage::backups::is_kept(&mut conn, id).await?
                }
                None => false,
            };
            if !kept {
                return Err(StepError::Backup(
                    "no backup of this data is recorded, so it is not dropped".to_owned(),
                ));
            }
            let mut conn = place.connect_cluster().await?;
            if place.isolation == "database" {
                tenant_schemas::drop_database(&mut conn, &place.name).await?;
            } else {
                tenant_schemas::drop_schema(&mut conn, &place.name).await?;
            }
            Ok(done(StepDone::default()))
        }
        Teardown::Roles => Ok(Outcome::Done(StepDone::default(), Effect::RemoveRoles)),
    }
}

/// Sends `message_type` to the product's hook: done on 2xx, waits on 202, fails otherwise.
async fn hook(
    provisioner: &Provisioner,
    run: &Run,
    message_type: &str,
    url: &str,
    secret: Option<&domain::provisioning::Reference>,
    place: Option<&Place>,
    now: DateTime<Utc>,
) -> Result<Outcome, StepError> {
    let product = &run.row.product_id;
    let tenant_id = run.row.tenant_id;
    let secret = provisioner.clusters.hook_secret(product, secret).await?;
    let report = format!("/v1/tenants/{tenant_id}/provisioning/{product}");
    let message_id = domain::provisioning::hook_request_id(
        tenant_id,
        product,
        &run.row.goal,
        run.row.generation,
    );
    let body = json!({
        "type": message_type,
        "timestamp": now,
        "data": {
            "tenant": {"id": tenant_id, "slug": run.tenant_slug, "name": run.tenant_name},
            "product": product,
            "database": place.map(|place| json!({"isolation": place.isolation, "name": place.name})),
            "report": {
                "complete": format!("{report}/complete"),
                "fail": format!("{report}/fail"),
                "request_id": message_id,
            },
        }
    });
    let body = serde_json::to_vec(&body).map_err(|error| StepError::Hook(error.to_string()))?;
    let timestamp = now.timestamp();
    let signature = webhooks::sign::signature_header(&[&secret], &message_id, timestamp, &body)
        .map_err(|_| {
            StepError::Config("the product's hook secret is not a whsec_ secret".to_owned())
        })?;
    let answer = webhooks::send::attempt(
        &provisioner.egress,
        webhooks::send::Message {
            url,
            id: &message_id,
            timestamp,
            signature: &signature,
            body: &body,
        },
    )
    .await;
    match answer.status {
        Some(202) => Ok(Outcome::WaitForReport),
        Some(status) if (200..300).contains(&status) => Ok(done(StepDone {
            hook_answered_at: Some(now),
            ..StepDone::default()
        })),
        Some(status) => Err(StepError::Hook(format!(
            "the product's hook answered {status}"
        ))),
        None => Err(StepError::Hook(
            answer.error.unwrap_or_else(|| "no answer".to_owned()),
        )),
    }
}
