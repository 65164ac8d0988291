//! Rules for a tenant's fields, each returning a message written for the person who sent it.

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
    fn only_demo_trial_and_active_are_creatable() {
        assert!(!CREATABLE_STATUSES.contains(&TenantStatus::Frozen));
        assert!(!CREATABLE_STATUSES.contains(&TenantStatus::Archived));
    }
}
