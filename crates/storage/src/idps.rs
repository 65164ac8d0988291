//! The `tenant_idp_config` table: a tenant's enterprise identity providers.

use chrono::{DateTime, Utc};
use domain::IdpKind;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

/// An identity provider as stored (the OIDC secret still encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpRow {
    /// Id.
    pub id: Uuid,
    /// The tenant it signs in.
    pub tenant_id: Uuid,
    /// OIDC or SAML.
    pub kind: IdpKind,
    /// Display name.
    pub name: String,
    /// Whether it is offered.
    pub enabled: bool,
    /// OIDC issuer.
    pub oidc_issuer: Option<String>,
    /// OIDC client id.
    pub oidc_client_id: Option<String>,
    /// OIDC client secret, encrypted.
    pub oidc_client_secret: Option<Vec<u8>>,
    /// OIDC scopes requested.
    pub oidc_scopes: Vec<String>,
    /// SAML metadata document.
    pub saml_metadata_xml: Option<String>,
    /// Where the SAML metadata is published.
    pub saml_metadata_url: Option<String>,
    /// SAML entity id.
    pub saml_entity_id: Option<String>,
    /// SAML single sign-on URL.
    pub saml_sso_url: Option<String>,
    /// Expiry of the SAML signing certificate.
    pub saml_certificate_expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct RawIdp {
    id: Uuid,
    tenant_id: Uuid,
    kind: String,
    name: String,
    enabled: bool,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<Vec<u8>>,
    oidc_scopes: Vec<String>,
    saml_metadata_xml: Option<String>,
    saml_metadata_url: Option<String>,
    saml_entity_id: Option<String>,
    saml_sso_url: Option<String>,
    saml_certificate_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<RawIdp> for IdpRow {
    type Error = sqlx::Error;

    fn try_from(raw: RawIdp) -> Result<Self, Self::Error> {
        Ok(Self {
            id: raw.id,
            tenant_id: raw.tenant_id,
            kind: raw
                .kind
                .parse()
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
            name: raw.name,
            enabled: raw.enabled,
            oidc_issuer: raw.oidc_issuer,
            oidc_client_id: raw.oidc_client_id,
            oidc_client_secret: raw.oidc_client_secret,
            oidc_scopes: raw.oidc_scopes,
            saml_metadata_xml: raw.saml_metadata_xml,
            saml_metadata_url: raw.saml_metadata_url,
            saml_entity_id: raw.saml_entity_id,
            saml_sso_url: raw.saml_sso_url,
            saml_certificate_expires_at: raw.saml_certificate_expires_at,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        })
    }
}

const COLUMNS: &str =
    "id, tenant_id, kind::text AS kind, name, enabled, oidc_issuer, oidc_client_id,
    oidc_client_secret, oidc_scopes, saml_metadata_xml, saml_metadata_url, saml_entity_id,
    saml_sso_url, saml_certificate_expires_at, created_at, updated_at";

/// Every column an insert or a full replacement sets.
#[derive(Debug, Clone)]
pub struct IdpValues {
    /// Id (chosen by the caller: the secret's encryption is bound to it).
    pub id: Uuid,
    /// OIDC or SAML.
    pub kind: IdpKind,
    /// Display name.
    pub name: String,
    /// Offered or not.
    pub enabled: bool,
    /// OIDC issuer.
    pub oidc_issuer: Option<String>,
    /// OIDC client id.
    pub oidc_client_id: Option<String>,
    /// OIDC client secret, encrypted.
    pub oidc_client_secret: Option<Vec<u8>>,
    /// OIDC scopes.
    pub oidc_scopes: Vec<String>,
    /// SAML metadata.
    pub saml_metadata_xml: Option<String>,
    /// SAML metadata URL.
    pub saml_metadata_url: Option<String>,
    /// SAML entity id.
    pub saml_entity_id: Option<String>,
    /// SAML SSO URL.
    pub saml_sso_url: Option<String>,
    /// SAML certificate expiry.
    pub saml_certificate_expires_at: Option<DateTime<Utc>>,
}

impl From<IdpRow> for IdpValues {
    fn from(row: IdpRow) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            name: row.name,
            enabled: row.enabled,
            oidc_issuer: row.oidc_issuer,
            oidc_client_id: row.oidc_client_id,
            oidc_client_secret: row.oidc_client_secret,
            oidc_scopes: row.oidc_scopes,
            saml_metadata_xml: row.saml_metadata_xml,
            saml_metadata_url: row.saml_metadata_url,
            saml_entity_id: row.saml_entity_id,
            saml_sso_url: row.saml_sso_url,
            saml_certificate_expires_at: row.saml_certificate_expires_at,
        }
    }
}

/// Inserts, or replaces every column of, the IdP `values.id` of `tenant_id`.
pub async fn save(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    values: &IdpValues,
) -> Result<IdpRow, sqlx::Error> {
    let raw: RawIdp = sqlx::query_as(&format!(
        "INSERT INTO tenant_idp_config (id, tenant_id, kind, name, enabled, oidc_issuer, oidc_client_id,
             oidc_client_secret, oidc_scopes, saml_metadata_xml, saml_metadata_url, saml_entity_id,
             saml_sso_url, saml_certificate_expires_at)
         VALUES ($1, $2, $3::idp_kind, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, enabled = EXCLUDED.enabled,
             oidc_issuer = EXCLUDED.oidc_issuer, oidc_client_id = EXCLUDED.oidc_client_id,
             oidc_client_secret = EXCLUDED.oidc_client_secret, oidc_scopes = EXCLUDED.oidc_scopes,
             saml_metadata_xml = EXCLUDED.saml_metadata_xml, saml_metadata_url = EXCLUDED.saml_metadata_url,
             saml_entity_id = EXCLUDED.saml_entity_id, saml_sso_url = EXCLUDED.saml_sso_url,
             saml_certificate_expires_at = EXCLUDED.saml_certificate_expires_at
         WHERE tenant_idp_config.tenant_id = EXCLUDED.tenant_id
         RETURNING {COLUMNS}"
    ))
    .bind(values.id)
    .bind(tenant_id)
    .bind(values.kind.as_str())
    .bind(&values.name)
    .bind(values.enabled)
    .bind(&values.oidc_issuer)
    .bind(&values.oidc_client_id)
    .bind(&values.oidc_client_secret)
    .bind(&values.oidc_scopes)
    .bind(&values.saml_metadata_xml)
    .bind(&values.saml_metadata_url)
    .bind(&values.saml_entity_id)
    .bind(&values.saml_sso_url)
    .bind(values.saml_certificate_expires_at)
    .fetch_one(conn)
    .await?;
    raw.try_into()
}

/// One IdP of a tenant.
pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> Result<Option<IdpRow>, sqlx::Error> {
    let raw: Option<RawIdp> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_idp_config WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    raw.map(IdpRow::try_from).transpose()
}

/// A tenant's IdPs, oldest first.
pub async fn list(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<IdpRow>, sqlx::Error> {
    let rows: Vec<RawIdp> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_idp_config WHERE tenant_id = $1 ORDER BY created_at, id"
    ))
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(IdpRow::try_from).collect()
}

/// Deletes an IdP; the row it was, if there was one.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<IdpRow>, sqlx::Error> {
    let raw: Option<RawIdp> = sqlx::query_as(&format!(
        "DELETE FROM tenant_idp_config WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    raw.map(IdpRow::try_from).transpose()
}
