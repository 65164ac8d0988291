//! The closed sets of labels the schema stores as PostgreSQL enums, and the tenant lifecycle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A label that names no member of the enum it was parsed as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {label:?}; expected one of: {expected}")]
pub struct UnknownLabel {
    /// Which enum was being parsed (`tenant status`, …).
    pub kind: &'static str,
    /// What was given.
    pub label: String,
    /// The accepted labels, comma separated.
    pub expected: String,
}

macro_rules! labelled_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal, $sql:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[doc = concat!("\n\nStored as the PostgreSQL enum `", $sql, "`; the labels and their order match it.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every member, in the order of the PostgreSQL enum.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The name of the PostgreSQL enum type.
            pub const SQL_TYPE: &'static str = $sql;

            /// The label as stored and as written in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;

            fn from_str(label: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|member| member.as_str() == label)
                    .ok_or_else(|| UnknownLabel {
                        kind: $kind,
                        label: label.to_owned(),
                        expected: Self::ALL
                            .iter()
                            .map(|member| member.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
}

labelled_enum! {
    /// Where a tenant is in its life; decides whether it may use the platform right now.
    TenantStatus, "tenant status", "tenant_status" {
        /// A demonstration tenant, never billed.
        Demo => "demo",
        /// Evaluating the platform until `trial_ends_at`.
        Trial => "trial",
        /// A paying customer in good standing.
        Active => "active",
        /// Suspended to reads only: its data can be read, not changed, and it is entitled to no
        /// product until it is active again.
        Frozen => "frozen",
        /// Soft-deleted: kept for restore or purge.
        Archived => "archived",
    }
}

labelled_enum! {
    /// Whether a tenant is a real customer or a demo environment.
    TenantKind, "tenant kind", "tenant_kind" {
        /// A customer organisation.
        Customer => "customer",
        /// A demonstration environment.
        Demo => "demo",
    }
}

labelled_enum! {
    /// The protocol of a tenant's enterprise identity provider.
    IdpKind, "identity provider kind", "idp_kind" {
        /// OpenID Connect.
        Oidc => "oidc",
        /// SAML 2.0.
        Saml => "saml",
    }
}

labelled_enum! {
    /// Whether a project inside a tenant is in use.
    ProjectStatus, "project status", "tenant_project_status" {
        /// In use.
        Active => "active",
        /// Soft-deleted, restorable.
        Archived => "archived",
    }
}

/// A lifecycle move the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a tenant from {from} to {to}; allowed from {from}: {}", allowed_list(.allowed))]
pub struct TransitionError {
    /// The current status.
    pub from: TenantStatus,
    /// The requested status.
    pub to: TenantStatus,
    /// Where `from` may go instead.
    pub allowed: &'static [TenantStatus],
}

fn allowed_list(allowed: &[TenantStatus]) -> String {
    if allowed.is_empty() {
        return "none".to_owned();
    }
    allowed
        .iter()
        .map(|status| status.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl TenantStatus {
    /// The statuses a tenant in `self` may move to.
    pub fn allowed_transitions(self) -> &'static [TenantStatus] {
        use TenantStatus::*;
        match self {
            Demo => &[Active, Archived],
            Trial => &[Active, Frozen, Archived],
            Active => &[Frozen, Archived],
            Frozen => &[Active, Archived],
            Archived => &[Frozen],
        }
    }

    /// Checks the move from `self` to `to`, returning the new status or what is allowed instead.
    pub fn transition_to(self, to: TenantStatus) -> Result<TenantStatus, TransitionError> {
        let allowed = self.allowed_transitions();
        if allowed.contains(&to) {
            Ok(to)
        } else {
            Err(TransitionError {
                from: self,
                to,
                allowed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_allows_exactly_the_documented_moves() {
        use TenantStatus::*;
        let allowed = [
            (Demo, Active),
            (Demo, Archived),
            (Trial, Active),
            (Trial, Frozen),
            (Trial, Archived),
            (Active, Frozen),
            (Active, Archived),
            (Frozen, Active),
            (Frozen, Archived),
            (Archived, Frozen),
        ];
        for &from in TenantStatus::ALL {
            for &to in TenantStatus::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.transition_to(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_refused_transition_lists_the_allowed_targets() {
        let err = TenantStatus::Archived
            .transition_to(TenantStatus::Active)
            .expect_err("archived cannot become active directly");
        assert_eq!(err.allowed, &[TenantStatus::Frozen]);
        assert_eq!(
            err.to_string(),
            "cannot move a tenant from archived to active; allowed from archived: frozen"
        );
    }

    fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> String {
        all.iter()
            .map(|member| label(*member))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn enum_labels_match_the_schema_order() {
        assert_eq!(
            labels(TenantStatus::ALL, TenantStatus::as_str),
            "demo,trial,active,frozen,archived"
        );
        assert_eq!(labels(TenantKind::ALL, TenantKind::as_str), "customer,demo");
        assert_eq!(labels(IdpKind::ALL, IdpKind::as_str), "oidc,saml");
        assert_eq!(
            labels(ProjectStatus::ALL, ProjectStatus::as_str),
            "active,archived"
        );
    }

    #[test]
    fn parsing_an_unknown_label_names_the_accepted_ones() {
        let err = "paused".parse::<TenantStatus>().expect_err("not a status");
        assert_eq!(
            err.to_string(),
            "unknown tenant status \"paused\"; expected one of: demo, trial, active, frozen, archived"
        );
        assert_eq!("frozen".parse::<TenantStatus>(), Ok(TenantStatus::Frozen));
    }

    #[test]
    fn statuses_serialize_as_their_labels() {
        assert_eq!(
            serde_json::to_string(&TenantStatus::Archived).expect("serializes"),
            "\"archived\""
        );
        assert_eq!(
            serde_json::from_str::<IdpKind>("\"saml\"").expect("parses"),
            IdpKind::Saml
        );
    }
}
