//! Pure types and rules of tenant-registry: no I/O, no database, no framework.
//!
//! Values that reach the rest of the system through these types are valid by construction
//! ("parse, don't validate"): a [`Slug`] cannot hold an uppercase letter, a
//! [`TenantStatus`] can only move along [`TenantStatus::allowed_transitions`].

mod enums;
pub mod event;
pub mod idp;
mod lifecycle;
pub mod migration_sql;
pub mod product;
pub mod product_migration;
pub mod provisioning;
mod scope;
pub mod slug;
pub mod subscription;
pub mod tenant;
pub mod webhook;
pub mod xml_shape;

pub use enums::{IdpKind, ProjectStatus, TenantKind, TenantStatus, TransitionError, UnknownLabel};
pub use lifecycle::{LifecycleRefusal, TenantWrite};
pub use scope::{Scope, Scopes};
pub use slug::{Slug, SlugError};
