//! Provisioning plans: what a product declares in its manifest to be done when a tenant
//! subscribes (a database schema, its migrations, seed rows, default roles, a hook), what is
//! undone when it leaves (hook, backup, drop), the states a (tenant, product) pair moves
//! through, and the names derived from a tenant's id.

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::UnknownLabel;

/// Steps a plan may hold.
pub const STEPS_MAX: usize = 20;
/// Roles one `roles` step may create.
pub const ROLES_MAX: usize = 50;
/// Permissions one role may hold.
pub const PERMISSIONS_MAX: usize = 200;
/// Statements one `seed` step may run.
pub const SEED_STATEMENTS_MAX: usize = 50;
/// Bytes of SQL one seed statement may have.
pub const SEED_SQL_MAX: usize = 64 * 1024;
/// Attempts of a run, unless the plan says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The most attempts a plan may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 50;

/// A product's provisioning plan, as its manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// How many attempts a run gets before it is `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

/// Where a tenant's data lives on the product's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A schema per tenant in the cluster's database.
    Schema,
    /// A database per tenant on the cluster.
    Database,
}

/// Where the registry finds a connection URL, so that no password is in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reference {
    /// An environment variable of the registry's process.
    Env(String),
    /// A file the registry's process can read (a mounted secret).
    File(String),
}

/// A default role a `roles` step creates in the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Its name, the slug rule (`tenant-admin`).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Its permissions (`documents:write`).
    pub permissions: Vec<String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A schema or database for the tenant on the product's cluster.
    Database {
        /// Schema or database per tenant.
        isolation: Isolation,
        /// The cluster's URL; `PRODUCT_DATABASE_<PRODUCT>` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<Reference>,
    },
    /// The product's registered migrations, applied in the tenant's schema.
    Migrations,
    /// Statements run once after the migrations, with `$1` the tenant's id (uuid), `$2` its
    /// slug and `$3` its name bound as parameters.
    Seed {
        /// The statements, one each.
        statements: Vec<String>,
    },
    /// Default roles created for the tenant in the registry.
    Roles {
        /// The roles.
        roles: Vec<RoleSpec>,
    },
    /// A signed `tenant.provisioning.requested` to the product (and
    /// `tenant.deprovisioning.requested` when the tenant leaves).
    Hook {
        /// Where it is sent.
        url: String,
        /// The Standard Webhooks secret (`whsec_…`); `PRODUCT_HOOK_SECRET_<PRODUCT>` when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<Reference>,
    },
}

impl Step {
    /// The step's kind, as shown in states and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Database { .. } => "database",
            Step::Migrations => "migrations",
            Step::Seed { .. } => "seed",
            Step::Roles { .. } => "roles",
            Step::Hook { .. } => "hook",
        }
    }
}

/// What undoing a plan does, in order: tell the product, keep a backup, then drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// `tenant.deprovisioning.requested` to the plan's hook.
    Hook {
        /// Where it is sent.
        url: String,
        /// Its secret.
        secret: Option<Reference>,
    },
    /// A `pg_dump` of the tenant's schema or database.
    Backup,
    /// The schema or database dropped (only once a backup of it is recorded).
    Drop,
    /// The roles the plan created removed.
    Roles,
}

impl Teardown {
    /// The step's kind, as shown in states and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Teardown::Hook { .. } => "hook",
            Teardown::Backup => "backup",
            Teardown::Drop => "drop",
            Teardown::Roles => "roles",
        }
    }
}

/// The id of the hook request of a run of `goal` (its `generation`) for tenant `tenant_id`
/// and `product`: the Standard Webhooks `webhook-id`, the same for each attempt of that run,
/// and what the product's report must name, so a late report meant for an earlier run (a
/// provisioning hook answered after the teardown began) cannot move a later one.
pub fn hook_request_id(tenant_id: Uuid, product: &str, goal: &str, generation: i64) -> String {
    format!("prov_{}_{product}_{goal}_{generation}", tenant_id.simple())
}

/// The kinds a plan's steps can be of.
pub const STEP_KINDS: [&str; 5] = ["database", "migrations", "seed", "roles", "hook"];

/// `kind` if it is one of [`STEP_KINDS`].
pub fn step_kind(kind: &str) -> Option<&'static str> {
    STEP_KINDS.into_iter().find(|known| *known == kind)
}

/// The kinds of the steps undoing a plan whose steps are of `kinds`, in order: what
/// [`Plan::teardown`] runs, named, for views that hold only the kinds.
pub fn teardown_kinds<S: AsRef<str>>(kinds: &[S]) -> Vec<&'static str> {
    let has = |kind: &str| kinds.iter().any(|each| each.as_ref() == kind);
    let mut steps: Vec<&'static str> = kinds
        .iter()
        .filter(|each| each.as_ref() == "hook")
        .map(|_| "hook")
        .collect();
    if has("database") {
        steps.extend(["backup", "drop"]);
    }
    if has("roles") {
        steps.push("roles");
    }
    steps
}

impl Plan {
    /// The kinds of its steps, in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.steps.iter().map(Step::kind).collect()
    }

    /// The references its steps name, each with its pointer under `/provisioning`.
    pub fn references(&self) -> Vec<(String, &Reference)> {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(index, step)| match step {
                Step::Database {
                    cluster: Some(reference),
                    ..
                } => Some((format!("/provisioning/steps/{index}/cluster"), reference)),
                Step::Hook {
                    secret: Some(reference),
                    ..
                } => Some((format!("/provisioning/steps/{index}/secret"), reference)),
                _ => None,
            })
            .collect()
    }

    /// Problems with its references as product `product`'s: a variable must be one of the
    /// product's own (`PRODUCT_…_<PRODUCT>`), so one product's manifest cannot borrow
    /// another's cluster or secret, and a file path must not climb (`..`).
    pub fn scope_problems(&self, product: &str) -> Vec<(String, String)> {
        let suffix = format!("_{}", env_suffix(product));
        // Exactly PRODUCT_<KIND>_<PRODUCT>: a name merely ending in `_<PRODUCT>` may be
        // another product's (product `sync` and PRODUCT_DATABASE_BILLING_SYNC).
        let owned = |name: &str| {
            name.strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.strip_suffix(&suffix))
                .is_some_and(|kind| ENV_KINDS.contains(&kind))
        };
        self.references()
            .into_iter()
            .filter_map(|(at, reference)| match reference {
                Reference::Env(name) if name.starts_with(ENV_PREFIX) && !owned(name) => Some((
                    format!("{at}/env"),
                    format!(
                        "must be one of this product's variables (PRODUCT_DATABASE{suffix} or PRODUCT_HOOK_SECRET{suffix})"
                    ),
                )),
                Reference::File(path) if path.split('/').any(|part| part == "..") => Some((
                    format!("{at}/file"),
                    "must not climb out of its directory (..)".to_owned(),
                )),
                Reference::File(path)
                    if SYSTEM_DIRECTORIES
                        .iter()
                        .any(|dir| path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))) =>
                {
                    Some((
                        format!("{at}/file"),
                        "must be a mounted secret, not under /proc, /sys or /dev (the process's own state)".to_owned(),
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The plan's database step, if it has one.
    pub fn database(&self) -> Option<(Isolation, Option<&Reference>)> {
        self.steps.iter().find_map(|step| match step {
            Step::Database { isolation, cluster } => Some((*isolation, cluster.as_ref())),
            _ => None,
        })
    }

    /// The index of the plan's migrations step, if it has one.
    pub fn migrations_step(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|step| matches!(step, Step::Migrations))
    }

    /// What undoing this plan does.
    pub fn teardown(&self) -> Vec<Teardown> {
        let mut steps = Vec::new();
        for step in &self.steps {
            if let Step::Hook { url, secret } = step {
                steps.push(Teardown::Hook {
                    url: url.clone(),
                    secret: secret.clone(),
                });
            }
        }
        if self.database().is_some() {
            steps.push(Teardown::Backup);
            steps.push(Teardown::Drop);
        }
        if self
            .steps
            .iter()
            .any(|step| matches!(step, Step::Roles { .. }))
        {
            steps.push(Teardown::Roles);
        }
        steps
    }

    /// Problems with the plan, as `(pointer, detail)` under `/provisioning`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut push = |pointer: String, detail: &str| problems.push((pointer, detail.to_owned()));
        if self.steps.is_empty() || self.steps.len() > STEPS_MAX {
            push(
                "/provisioning/steps".to_owned(),
                &format!("must hold 1 to {STEPS_MAX} steps"),
            );
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            push(
                "/provisioning/max_attempts".to_owned(),
                &format!("must be 1 to {MAX_ATTEMPTS_LIMIT}"),
            );
        }
        let mut database_seen = false;
        let mut migrations_seen = false;
        for (index, step) in self.steps.iter().enumerate() {
            let at = format!("/provisioning/steps/{index}");
            let repeated = self.steps[..index]
                .iter()
                .any(|earlier| earlier.kind() == step.kind());
            if repeated {
                push(at.clone(), "a plan holds each kind of step at most once");
            }
            match step {
                Step::Database { cluster, .. } => {
                    database_seen = true;
                    if let Some(reference) = cluster {
                        reference_problems(&mut push, &format!("{at}/cluster"), reference);
                    }
                }
                Step::Migrations => {
                    migrations_seen = true;
                    if !database_seen {
                        push(at, "migrations need a database step before them");
                    }
                }
                Step::Seed { statements } => {
                    if !migrations_seen {
                        push(at.clone(), "a seed runs after a migrations step");
                    }
                    if statements.is_empty() || statements.len() > SEED_STATEMENTS_MAX {
                        push(
                            format!("{at}/statements"),
                            &format!("must hold 1 to {SEED_STATEMENTS_MAX} statements"),
                        );
                    }
                    for (number, statement) in statements.iter().enumerate() {
                        if statement.trim().is_empty() || statement.len() > SEED_SQL_MAX {
                            push(
                                format!("{at}/statements/{number}"),
                                "must be a statement of 1 byte to 64 KiB",
                            );
                        }
                    }
                }
                Step::Roles { roles } => role_problems(&mut push, &at, roles),
                Step::Hook { url, secret } => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        push(format!("{at}/url"), "must be an http(s) URL");
                    }
                    if let Some(reference) = secret {
                        reference_problems(&mut push, &format!("{at}/secret"), reference);
                    }
                }
            }
        }
        problems
    }
}

fn reference_problems(push: &mut impl FnMut(String, &str), at: &str, reference: &Reference) {
    match reference {
        Reference::Env(name) if !is_env_name(name) || !name.starts_with(ENV_PREFIX) => {
            push(
                format!("{at}/env"),
                "must name a PRODUCT_… environment variable ([A-Z0-9_])",
            );
        }
        Reference::File(path) if !path.starts_with('/') || path.len() > 1024 => {
            push(format!("{at}/file"), "must be an absolute path");
        }
        _ => {}
    }
}

fn role_problems(push: &mut impl FnMut(String, &str), at: &str, roles: &[RoleSpec]) {
    if roles.is_empty() || roles.len() > ROLES_MAX {
        push(
            format!("{at}/roles"),
            &format!("must hold 1 to {ROLES_MAX} roles"),
        );
    }
    for (index, role) in roles.iter().enumerate() {
        let role_at = format!("{at}/roles/{index}");
        if crate::Slug::parse(&role.name).is_err() {
            push(
                format!("{role_at}/name"),
                "must follow the slug rule (3–63 of [a-z0-9-])",
            );
        }
        if roles[..index]
            .iter()
            .any(|earlier| earlier.name == role.name)
        {
            push(format!("{role_at}/name"), "is named twice");
        }
        if role.description.chars().count() > 500 {
            push(
                format!("{role_at}/description"),
                "must be at most 500 characters",
            );
        }
        if role.permissions.len() > PERMISSIONS_MAX {
            push(
                format!("{role_at}/permissions"),
                &format!("must hold at most {PERMISSIONS_MAX} permissions"),
            );
        }
        for (number, permission) in role.permissions.iter().enumerate() {
            if !is_permission(permission) {
                push(
                    format!("{role_at}/permissions/{number}"),
                    "must be 1 to 100 of [a-z0-9_.:-], starting with a letter",
                );
            }
        }
    }
}

/// The prefix of every environment variable a plan may name: the registry's own settings
/// (its database URL, its encryption keys) are never a manifest's to read.
pub const ENV_PREFIX: &str = "PRODUCT_";

/// What a product's variables hold: `PRODUCT_<KIND>_<PRODUCT>`.
const ENV_KINDS: [&str; 2] = ["DATABASE", "HOOK_SECRET"];

/// Where a file reference would read the process's own state (its environment, memory).
const SYSTEM_DIRECTORIES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The type of the hook message sent when a tenant is to be provisioned.
pub const PROVISIONING_REQUESTED: &str = "tenant.provisioning.requested";
/// The type of the hook message sent when a tenant is to be deprovisioned.
pub const DEPROVISIONING_REQUESTED: &str = "tenant.deprovisioning.requested";

/// Whether `name` can name an environment variable.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `permission` is written the way permissions are (`documents:write`).
pub fn is_permission(permission: &str) -> bool {
    (1..=100).contains(&permission.len())
        && permission.starts_with(|c: char| c.is_ascii_lowercase())
        && permission.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
        })
}

/// The product's part of a variable name: `billing-sync` → `BILLING_SYNC`.
fn env_suffix(product: &str) -> String {
    product.to_ascii_uppercase().replace('-', "_")
}

/// The environment variable naming product `product`'s cluster when its plan names none.
pub fn default_cluster_env(product: &str) -> String {
    format!("PRODUCT_DATABASE_{}", env_suffix(product))
}

/// The environment variable holding product `product`'s hook secret when its plan names
/// none.
pub fn default_hook_secret_env(product: &str) -> String {
    format!("PRODUCT_HOOK_SECRET_{}", env_suffix(product))
}

/// The schema (or database) a tenant gets: from its id, which never changes, not its slug,
/// which may. 39 characters, within PostgreSQL's 63.
pub fn tenant_object_name(tenant_id: Uuid) -> String {
    format!("tenant_{}", tenant_id.simple())
}

/// Where a (tenant, product) pair stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisioningState {
    /// Queued, not started.
    Pending,
    /// A step is running, or waits for the product to report back.
    Running,
    /// Every step done.
    Ready,
    /// The last attempt failed; `retry` starts again.
    Failed,
    /// Being undone.
    Deprovisioning,
    /// Undone: backed up and dropped.
    Deprovisioned,
}

impl ProvisioningState {
    /// Every state, in documentation order.
    pub const ALL: &'static [ProvisioningState] = &[
        ProvisioningState::Pending,
        ProvisioningState::Running,
        ProvisioningState::Ready,
        ProvisioningState::Failed,
        ProvisioningState::Deprovisioning,
        ProvisioningState::Deprovisioned,
    ];

    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningState::Pending => "pending",
            ProvisioningState::Running => "running",
            ProvisioningState::Ready => "ready",
            ProvisioningState::Failed => "failed",
            ProvisioningState::Deprovisioning => "deprovisioning",
            ProvisioningState::Deprovisioned => "deprovisioned",
        }
    }

    /// Whether the runner has work to do in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ProvisioningState::Pending
                | ProvisioningState::Running
                | ProvisioningState::Deprovisioning
        )
    }
}

impl fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProvisioningState {
    type Err = UnknownLabel;

    fn from_str(label: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|state| state.as_str() == label)
            .ok_or_else(|| UnknownLabel {
                kind: "provisioning state",
                label: label.to_owned(),
                expected: Self::ALL
                    .iter()
                    .map(|state| state.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// How long after failed attempt `attempt` (1-based) the next one runs: `base` doubled each
/// time, at most an hour.
pub fn retry_delay(base: TimeDelta, attempt: u32) -> TimeDelta {
    let doublings = attempt.saturating_sub(1).min(16);
    let delay = base * 2_i32.pow(doublings);
    delay.min(TimeDelta::hours(1))
}

#[cfg(test)]
mod tests;
