//! The names a tenant is found by besides its id: its slugs (who may take one, and the former
//! slugs that keep leading to their tenant until a platform principal releases them) and the
//! OIDC organization its users come from.
//!
//! A tenant holds at most `domain::tenant::MAX_FORMER_SLUGS` former slugs. Every use case
//! that takes or gives up a slug first takes a transaction-scoped advisory lock on it (after the tenant's row lock, when it holds one), so a rename and a concurrent
//! attempt to take the slug it gives up cannot both see it free.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// Takes the transaction-scoped locks on `slugs` (in one order, so two use cases never wait
/// on each other): every use case that takes a slug or gives one up holds its lock, so the
/// check that a slug is free and the write that takes it see the same slugs.
async fn lock(conn: &mut PgConnection, slugs: &[&str]) -> Result<(), sqlx::Error> {
    let mut sorted = slugs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for slug in sorted {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('tenant-slug:' || $1, 0))")
            .bind(slug)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Whether `slug` is free for tenant `id`: no other tenant has it now or had it (a former
/// slug stays its tenant's until a platform principal releases it).
async fn free_for(conn: &mut PgConnection, slug: &str, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM tenants WHERE slug = $1 AND id <> $2)
            AND NOT EXISTS (SELECT 1 FROM tenant_slug_history WHERE slug = $1 AND tenant_id <> $2)",
    )
    .bind(slug)
    .bind(id)
    .fetch_one(conn)
    .await
}

/// For tenant `id` about to be inserted with `slug`: locks the slug until the transaction
/// ends and says whether it is free (nobody's current or former slug).
pub async fn reserve(conn: &mut PgConnection, id: Uuid, slug: &str) -> Result<bool, sqlx::Error> {
    lock(conn, &[slug]).await?;
    free_for(conn, slug, id).await
}

/// What became of a slug move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlugMove {
    /// The history now holds the slug left behind; the caller writes the new one on the row.
    Moved,
    /// The new slug is another tenant's, now or formerly.
    Unavailable,
    /// The tenant would hold more former slugs than it may.
    Refused(domain::tenant::TooManyFormerSlugs),
}

/// Moves tenant `id` (its row locked) from slug `from` to `to` in the history, if `to` is
/// free for it and the tenant may hold one more former slug
/// ([`domain::tenant::former_slugs_after_rename`]): `from` becomes a former slug, and `to`
/// stops being one if it was. The row lock keeps the count exact: every rename of the
/// tenant waits for it.
pub(crate) async fn move_slug(
    conn: &mut PgConnection,
    id: Uuid,
    from: &str,
    to: &str,
) -> Result<SlugMove, sqlx::Error> {
    lock(conn, &[from, to]).await?;
    if !free_for(conn, to, id).await? {
        return Ok(SlugMove::Unavailable);
    }
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tenant_slug_history
         WHERE tenant_id = $1 AND slug <> $2 AND slug <> $3",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await?;
    let held_after = usize::try_from(kept)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if let Err(refusal) = domain::tenant::former_slugs_after_rename(held_after) {
        return Ok(SlugMove::Refused(refusal));
    }
    sqlx::query("DELETE FROM tenant_slug_history WHERE slug = $1 AND tenant_id = $2")
        .bind(to)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO tenant_slug_history (slug, tenant_id) VALUES ($1, $2)
         ON CONFLICT (slug) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, retired_at = now()",
    )
    .bind(from)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(SlugMove::Moved)
}

/// A slug a tenant used to have: it still leads to the tenant, and no other tenant can take
/// it until a platform principal releases it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct FormerSlug {
    /// The slug.
    pub slug: String,
    /// When the tenant moved away from it.
    pub retired_at: DateTime<Utc>,
}

/// A tenant's former slugs, newest first.
pub async fn former(pool: &PgPool, id: Uuid) -> Result<Vec<FormerSlug>, sqlx::Error> {
    sqlx::query_as(
        "SELECT slug, retired_at FROM tenant_slug_history WHERE tenant_id = $1
         ORDER BY retired_at DESC, slug",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// Releases a former slug of tenant `id`, so it no longer leads there and any tenant may
/// take it; whether the tenant had it.
pub async fn release(conn: &mut PgConnection, id: Uuid, slug: &str) -> Result<bool, sqlx::Error> {
    lock(conn, &[slug]).await?;
    Ok(
        sqlx::query("DELETE FROM tenant_slug_history WHERE tenant_id = $1 AND slug = $2")
            .bind(id)
            .bind(slug)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// An organization of an OIDC issuer, whose users belong to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcOrganization {
    /// The issuer, exactly as in tokens' `iss`.
    pub issuer: String,
    /// The organization's id or alias, as tokens' `organization` claim names it.
    pub organization: String,
}

/// The tenants mapped to an organization of `issuer` named by any of `names` (its id and
/// alias): none, one, or (when id and alias are mapped apart) more.
pub async fn ids_by_oidc_organization(
    pool: &PgPool,
    issuer: &str,
    names: &[String],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT id FROM tenants WHERE oidc_issuer = $1 AND oidc_organization = ANY($2)",
    )
    .bind(issuer)
    .bind(names)
    .fetch_all(pool)
    .await
}
