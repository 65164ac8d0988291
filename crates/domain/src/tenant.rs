//! Rules for a tenant's fields, each returning a message written for the person who sent it.

use chrono::{DateTime, Utc};

use crate::TenantStatus;

/// Longest display name accepted.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest plan, billing id or sales owner accepted.
pub const MAX_SHORT_TEXT: usize = 128;
/// Longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// The statuses a tenant may be created in (the others are reached by transitions).
pub const CREATABLE_STATUSES: &[TenantStatus] = &[
    TenantStatus::Demo,
    TenantStatus::Trial,
    TenantStatus::Active,
];

/// Most former slugs one tenant holds. Each stays reserved to it until a platform principal
/// releases it, so without a bound a tenant renaming itself in a loop would take any number
/// of names from every other tenant.
pub const MAX_FORMER_SLUGS: usize = 5;

/// A rename refused because the tenant would hold more than [`MAX_FORMER_SLUGS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this tenant already holds {MAX_FORMER_SLUGS} former slugs, each reserved to it, the most \
     one tenant may; take one of them back, or have a platform principal release one \
     (DELETE /v1/tenants/{{id}}/former-slugs/{{slug}}) before choosing a new slug"
)]
pub struct TooManyFormerSlugs;

/// Whether a rename may leave the tenant holding `held_after` former slugs (taking back a
/// former slug leaves the count as it was; moving to a new one adds the slug left behind).
pub fn former_slugs_after_rename(held_after: usize) -> Result<(), TooManyFormerSlugs> {
    if held_after > MAX_FORMER_SLUGS {
        Err(TooManyFormerSlugs)
    } else {
        Ok(())
    }
}

/// Every field of a tenant a create or patch body may name (`status` is set only at creation).
pub const FIELDS: &[&str] = &[
    "slug",
    "name",
    "plan",
    "kind",
    "status",
    "trial_ends_at",
    "erp_id",
    "stripe_id",
    "contract_starts_on",
    "contract_ends_on",
    "sales_owner",
    "contact_email",
    "oidc_organization",
];

/// The fields a tenant principal may change about its own tenant: what it is called and how
/// it is reached. Every other field is commercial, lifecycle or identity-mapping data that
/// only platform principals change (a field added later is the platform's until listed here).
pub const EDITABLE_BY_TENANT: &[&str] = &["slug", "name", "contact_email"];

/// The fields among `requested` that a tenant principal may not change, in the order given;
/// names that are no tenant field are left to validation.
pub fn reserved_to_platform<'a>(requested: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    requested
        .into_iter()
        .filter(|field| FIELDS.contains(field) && !EDITABLE_BY_TENANT.contains(field))
        .collect()
}

/// A trial end set on a tenant in `status`: only a trial has one, and it lies after `now`.
pub fn trial_end(
    status: TenantStatus,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if status != TenantStatus::Trial {
        Err("only a trial tenant has a trial end".to_owned())
    } else if at <= now {
        Err("must be in the future".to_owned())
    } else {
        Ok(())
    }
}

/// Why a tenant moves along its lifecycle, as recorded with the move: trimmed, 1 to 500
/// characters.
pub fn transition_reason(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 500 {
        Err("must be 1 to 500 characters".to_owned())
    } else {
        Ok(trimmed.to_owned())
    }
}

/// The Keycloak organization a tenant's users come from, as the token's `organization` claim
/// names it (its id, or its alias): 1 to 255 printable characters, no spaces.
pub fn oidc_organization(input: &str) -> Result<String, String> {
    if input.is_empty() || input.chars().count() > 255 {
        return Err("must be 1 to 255 characters".to_owned());
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    Ok(input.to_owned())
}

/// A display name: trimmed, 1 to 200 characters, no control characters.
pub fn name(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// A plan name: 1 to 128 of `[a-z0-9_-]` (plans are identifiers products match on).
pub fn plan(input: &str) -> Result<String, String> {
    if input.is_empty() || input.len() > MAX_SHORT_TEXT {
        return Err(format!("must be 1 to {MAX_SHORT_TEXT} characters"));
    }
    if !input
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(
            "may contain only lowercase letters, digits, dashes and underscores".to_owned(),
        );
    }
    Ok(input.to_owned())
}

/// A free-text identifier (ERP id, Stripe id, sales owner): trimmed, 1 to 128 printable characters.
pub fn short_text(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_SHORT_TEXT {
        return Err(format!(
            "must be 1 to {MAX_SHORT_TEXT} characters, not only spaces"
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// An email address: one `@`, a non-empty local part, a domain with a dot, no spaces; the
/// domain is lowercased.
pub fn email(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let invalid = || "must be an email address like name@example.com".to_owned();
    if trimmed.len() > MAX_EMAIL_LEN {
        return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
    }
    let (local, domain) = trimmed.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if local.is_empty()
        || domain.contains('@')
        || !domain_ok
        || local.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// An email address as it may appear in logs: the first character of the local part, then
/// `***`, then the domain (`a***@acme.com`).
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transition_reason_is_trimmed_and_bounded() {
        assert_eq!(
            transition_reason(" contract signed "),
            Ok("contract signed".to_owned())
        );
        assert!(transition_reason("   ").is_err());
        assert!(transition_reason(&"x".repeat(501)).is_err());
        assert!(transition_reason(&"é".repeat(500)).is_ok());
    }

    #[test]
    fn a_rename_may_leave_at_most_five_former_slugs() {
        for held_after in 0..=MAX_FORMER_SLUGS {
            assert_eq!(
                former_slugs_after_rename(held_after),
                Ok(()),
                "{held_after}"
            );
        }
        assert_eq!(
            former_slugs_after_rename(MAX_FORMER_SLUGS + 1),
            Err(TooManyFormerSlugs)
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("  Acme Corp "), Ok("Acme Corp".to_owned()));
        assert!(name("   ").is_err());
        assert!(name(&"x".repeat(201)).is_err());
        assert!(name("a\u{0}b").is_err());
    }

    #[test]
    fn plans_are_identifiers() {
        assert_eq!(plan("enterprise_2026"), Ok("enterprise_2026".to_owned()));
        assert!(plan("Enterprise").is_err());
        assert!(plan("").is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(email("Alice@ACME.com"), Ok("Alice@acme.com".to_owned()));
        for bad in [
            "alice",
            "@acme.com",
            "alice@acme",
            "alice@@acme.com",
            "al ice@acme.com",
            "alice@.acme.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_masked_email_keeps_only_the_first_letter_and_the_domain() {
        assert_eq!(mask_email("alice@acme.com"), "a***@acme.com");
        assert_eq!(mask_email("not-an-email"), "***");
    }

    #[test]
    fn a_tenant_may_edit_only_its_name_slug_and_contact() {
        let requested = [
            "name",
            "plan",
            "slug",
            "kind",
            "trial_ends_at",
            "contract_starts_on",
            "contract_ends_on",
            "erp_id",
            "stripe_id",
            "sales_owner",
            "status",
            "oidc_organization",
            "contact_email",
            "colour",
        ];
        assert_eq!(
            reserved_to_platform(requested),
            vec![
                "plan",
                "kind",
                "trial_ends_at",
                "contract_starts_on",
                "contract_ends_on",
                "erp_id",
                "stripe_id",
                "sales_owner",
                "status",
                "oidc_organization"
            ]
        );
        assert!(reserved_to_platform(["name", "slug", "contact_email"]).is_empty());
        assert!(
            EDITABLE_BY_TENANT
                .iter()
                .all(|field| FIELDS.contains(field)),
            "the editable fields are tenant fields"
        );
    }

    #[test]
    fn only_a_trial_has_a_trial_end_and_it_lies_ahead() {
        let now = Utc::now();
        let later = now + chrono::Duration::days(1);
        assert_eq!(trial_end(TenantStatus::Trial, later, now), Ok(()));
        assert!(trial_end(TenantStatus::Trial, now, now).is_err());
        for status in [
            TenantStatus::Demo,
            TenantStatus::Active,
            TenantStatus::Frozen,
            TenantStatus::Archived,
        ] {
            assert!(trial_end(status, later, now).is_err(), "{status}");
        }
    }

    #[test]
    fn an_oidc_organization_is_one_token_of_printable_text() {
        assert_eq!(oidc_organization("acme-corp"), Ok("acme-corp".to_owned()));
        assert!(oidc_organization("").is_err());
        assert!(oidc_organization("acme corp").is_err());
        assert!(oidc_organization(&"x".repeat(256)).is_err());
    }

    #[test]
    fn only_demo_trial_and_active_are_creatable() {
        assert!(!CREATABLE_STATUSES.contains(&TenantStatus::Frozen));
        assert!(!CREATABLE_STATUSES.contains(&TenantStatus::Archived));
    }
}
