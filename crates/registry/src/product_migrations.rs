//! Registering a product's tenant-schema migrations: append-only and checksummed, checked
//! against what is registered under the product's row lock, so two registrations of one
//! product take turns and neither can change what the other registered.

use domain::Slug;
use domain::product_migration::{self, Asked, Registered};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use storage::PgPool;
use storage::product_migrations::{self, MigrationRow, NewMigration};

use crate::trail::{self, Target};
use crate::{Actor, RegistryError};

/// A migration as a caller lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// Its SQL.
    pub sql: String,
}

/// The SHA-256 of `sql`, hex: what a registered migration's text is checked against.
fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// A list whose shape passed the rules, each migration with its checksum, computed once.
#[derive(Debug, Clone)]
pub struct Checked {
    listed: Vec<Listed>,
    checksums: Vec<String>,
}

/// Checks `listed` itself, before anything is read: the list to register, or what is wrong,
/// `(pointer, detail)` each.
pub fn check(listed: Vec<Listed>) -> Result<Checked, Vec<(String, String)>> {
    let checksums: Vec<String> = listed.iter().map(|m| checksum(&m.sql)).collect();
    let problems = product_migration::shape_problems(&asked(&listed, &checksums));
    if problems.is_empty() {
        Ok(Checked { listed, checksums })
    } else {
        Err(problems)
    }
}

fn asked<'a>(listed: &'a [Listed], checksums: &'a [String]) -> Vec<Asked<'a>> {
    listed
        .iter()
        .zip(checksums)
        .map(|(migration, checksum)| Asked {
            version: migration.version,
            name: &migration.name,
            sql: &migration.sql,
            checksum,
        })
        .collect()
}

/// What a registration did.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Every migration of the product, in version order.
    pub migrations: Vec<MigrationRow>,
    /// How many this registration added.
    pub added: usize,
    /// The fleet migration that takes the new ones to every provisioned tenant, when the
    /// product's plan has a migrations step and some were added.
    pub operation_id: Option<uuid::Uuid>,
}

/// Registers the new migrations of `listed` for product `id`:
/// every registered one must be listed unchanged, new ones come after them; new ones are
/// queued for every tenant the product has provisioned, as one operation.
pub async fn register(
    pool: &PgPool,
    actor: &Actor<'_>,
    id: &Slug,
    listed: &Checked,
) -> Result<Registration, RegistryError> {
    let asked = asked(&listed.listed, &listed.checksums);
    let asked = &asked;
    storage::with_retries(move || async move {
        let mut transaction = storage::begin(pool).await?;
        if !product_migrations::lock_product(&mut transaction, id.as_str()).await? {
            return Err(RegistryError::not_found("no such product"));
        }
        let stored = product_migrations::list(&mut transaction, id.as_str()).await?;
        let registered: Vec<Registered<'_>> = stored
            .iter()
            .map(|row| Registered {
                version: row.version,
                name: &row.name,
                checksum: &row.checksum,
            })
            .collect();
        let new = product_migration::appended(&registered, asked)
            .map_err(|(pointer, detail)| RegistryError::conflict_field(&pointer, &detail))?;
        let added: Vec<NewMigration<'_>> = new
            .iter()
            .map(|&index| NewMigration {
                version: i32::try_from(asked[index].version).unwrap_or(i32::MAX),
                name: asked[index].name,
                sql: asked[index].sql,
                checksum: asked[index].checksum,
            })
            .collect();
        if !added.is_empty() {
            product_migrations::insert(&mut transaction, id.as_str(), &added).await?;
            let versions: Vec<Value> = added.iter().map(|m| Value::from(m.version)).collect();
            let fields = Map::from_iter([("versions".to_owned(), Value::from(versions))]);
            let target = Target {
                tenant_id: None,
                id: id.as_str().to_owned(),
                kind: "product",
                name: id.as_str().to_owned(),
            };
            trail::record(
                &mut transaction,
                actor,
                target,
                "product.migrations_registered",
                'c',
                fields,
            )
            .await?;
        }
        let operation_id = if added.is_empty() {
            None
        } else {
            fleet_migration(&mut transaction, actor, id.as_str()).await?
        };
        let all = product_migrations::list(&mut transaction, id.as_str()).await?;
        storage::commit(transaction).await?;
        Ok(Registration {
            migrations: all,
            added: added.len(),
            operation_id,
        })
    })
    .await
}

/// Queues the new migrations for every tenant product `id` has provisioned, if its plan
/// has a migrations step; answers the operation.
async fn fleet_migration(
    conn: &mut storage::PgConnection,
    actor: &Actor<'_>,
    id: &str,
) -> Result<Option<uuid::Uuid>, RegistryError> {
    let Some(manifest) = storage::products::manifest_in(conn, id).await? else {
        return Ok(None);
    };
    let manifest: domain::product::Manifest =
        serde_json::from_value(manifest).map_err(RegistryError::internal)?;
    let Some(plan) = &manifest.provisioning else {
        return Ok(None);
    };
    let operation_id = uuid::Uuid::new_v4();
    let actor_id = actor.principal.actor_id();
    let queued =
        crate::provisioning::queue_fleet_migration(conn, &actor_id, id, plan, operation_id).await?;
    Ok(queued.map(|_| operation_id))
}
