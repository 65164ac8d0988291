//! Enterprise SSO configuration rules: OIDC issuer URLs and SAML IdP metadata.
//!
//! SAML metadata is parsed without DTD support at all: a document with a `<!DOCTYPE` is
//! refused before parsing, so no entity (internal or external) is ever expanded and nothing
//! is ever fetched on the document's behalf.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use crate::xml_shape;

const METADATA_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// Most nodes (elements, attributes, text) the parser builds for one document.
const MAX_NODES: u32 = 200_000;

/// Whether `url` may serve as an operator-configured URL (the OIDC issuer of platform
/// admins): https, or plain http on loopback when
/// `allow_loopback_http` (outside prod); never with a user name or password, which would
/// also let `http://127.0.0.1:1@elsewhere` pass for loopback. URLs that callers give follow
/// the outbound policy of the `egress` crate instead.
pub fn check_url(url: &str, allow_loopback_http: bool) -> Result<(), String> {
    let authority = url.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or_default()
    });
    if authority.contains(['@', '\\']) {
        return Err("must not carry a user name or password".to_owned());
    }
    if let Some(rest) = url.strip_prefix("https://") {
        return if rest.is_empty() || rest.contains(char::is_whitespace) {
            Err("must be an https URL".to_owned())
        } else {
            Ok(())
        };
    }
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|prefix| {
            url.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        });
    if loopback && allow_loopback_http {
        Ok(())
    } else {
        Err("must be an https URL (plain http only on loopback, outside prod)".to_owned())
    }
}

/// An email domain as a tenant claims it: lowercased, at most 253 characters, dot-separated
/// labels of `[a-z0-9-]` (no edge dash), at least two labels.
pub fn email_domain(input: &str) -> Result<String, String> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    let invalid = || "must be a domain name like acme.com".to_owned();
    if domain.len() > 253 || !domain.contains('.') {
        return Err(invalid());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let last_is_name = domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_lowercase()));
    if domain.split('.').all(label_ok) && last_is_name {
        Ok(domain)
    } else {
        Err(invalid())
    }
}

/// The domain part of an email address, as [`email_domain`] normalises it.
pub fn domain_of_email(email: &str) -> Option<String> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    (!local.is_empty()).then_some(())?;
    email_domain(domain).ok()
}

/// What the registry keeps of an IdP's SAML metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlMetadata {
    /// The IdP's `entityID`.
    pub entity_id: String,
    /// Where users are sent to sign in (the first `SingleSignOnService` location).
    pub sso_url: String,
    /// When the signing certificate expires.
    pub certificate_expires_at: DateTime<Utc>,
}

/// Parses IdP metadata XML, saying exactly what is missing when it is not usable.
pub fn parse_saml_metadata(xml: &str) -> Result<SamlMetadata, String> {
    if xml.len() > 1024 * 1024 {
        return Err("metadata larger than 1 MiB".to_owned());
    }
    if xml.to_ascii_uppercase().contains("<!DOCTYPE") {
        return Err(
            "metadata with a DTD (<!DOCTYPE) is refused: entities are never expanded".to_owned(),
        );
    }
    xml_shape::check(xml).map_err(|shape| format!("not plausible IdP metadata: {shape}"))?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(xml, options)
        .map_err(|error| format!("not well-formed XML: {error}"))?;
    let root = document.root_element();
    if !root.has_tag_name((METADATA_NS, "EntityDescriptor")) {
        return Err("the root element must be md:EntityDescriptor".to_owned());
    }
    let entity_id = root
        .attribute("entityID")
        .filter(|id| !id.trim().is_empty())
        .ok_or("EntityDescriptor has no entityID")?
        .to_owned();
    let idp = root
        .children()
        .find(|node| node.has_tag_name((METADATA_NS, "IDPSSODescriptor")))
        .ok_or("no IDPSSODescriptor: this is not identity provider metadata")?;
    let sso_url = idp
        .children()
        .filter(|node| node.has_tag_name((METADATA_NS, "SingleSignOnService")))
        .find_map(|node| node.attribute("Location"))
        .filter(|location| !location.trim().is_empty())
        .ok_or("IDPSSODescriptor has no SingleSignOnService with a Location")?
        .to_owned();
    let certificate = idp
        .children()
        .filter(|node| node.has_tag_name((METADATA_NS, "KeyDescriptor")))
        .filter(|node| node.attribute("use").is_none_or(|usage| usage == "signing"))
        .flat_map(|node| node.descendants())
        .find(|node| node.has_tag_name((DSIG_NS, "X509Certificate")))
        .and_then(|node| node.text())
        .ok_or("IDPSSODescriptor has no signing certificate (KeyDescriptor/KeyInfo/X509Data/X509Certificate)")?;
    let der = STANDARD
        .decode(certificate.split_whitespace().collect::<String>())
        .map_err(|_| "the signing certificate is not base64".to_owned())?;
    let certificate_expires_at = certificate_not_after(&der)
        .ok_or("the signing certificate is not a readable X.509 certificate")?;
    Ok(SamlMetadata {
        entity_id,
        sso_url,
        certificate_expires_at,
    })
}

/// One DER element: its tag, its content, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// `notAfter` of a DER X.509 certificate: Certificate → tbsCertificate → validity.
fn certificate_not_after(der: &[u8]) -> Option<DateTime<Utc>> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // An optional [0] version, then serial, signature algorithm and issuer before validity.
    let (tag, _, after_version) = der_element(tbs)?;
    let mut fields = if tag == 0xa0 { after_version } else { tbs };
    for _ in 0..3 {
        fields = der_element(fields)?.2;
    }
    let (tag, validity, _) = der_element(fields)?;
    if tag != SEQUENCE {
        return None;
    }
    let after_not_before = der_element(validity)?.2;
    let (tag, time, _) = der_element(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let text = text.strip_suffix('Z')?;
    let full = match tag {
        0x17 => {
            // UTCTime: YY < 50 is 20YY (RFC 5280).
            let year: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if year < 50 { "20" } else { "19" })
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let parsed = NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S")
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(full.get(..8)?, "%Y%m%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })?;
    Some(parsed.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../fixtures/idp-signing-cert.b64");

    fn metadata(idp_children: &str) -> String {
        format!(
            r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.acme.com/saml">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{idp_children}</md:IDPSSODescriptor>
</md:EntityDescriptor>"#
        )
    }

    fn signing_key() -> String {
        format!(
            r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{CERT}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#
        )
    }

    const SSO: &str = r#"<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.acme.com/sso"/>"#;

    #[test]
    fn good_metadata_yields_entity_id_sso_url_and_certificate_expiry() {
        let parsed = parse_saml_metadata(&metadata(&format!("{}{SSO}", signing_key())))
            .expect("valid metadata");
        assert_eq!(parsed.entity_id, "https://idp.acme.com/saml");
        assert_eq!(parsed.sso_url, "https://idp.acme.com/sso");
        assert_eq!(
            parsed.certificate_expires_at.format("%Y-%m-%d").to_string(),
            "2036-11-20"
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let no_cert = parse_saml_metadata(&metadata(SSO)).expect_err("no certificate");
        assert!(no_cert.contains("signing certificate"), "{no_cert}");
        let no_sso = parse_saml_metadata(&metadata(&signing_key())).expect_err("no sso");
        assert!(no_sso.contains("SingleSignOnService"), "{no_sso}");
        let not_xml = parse_saml_metadata("this is not xml").expect_err("not xml");
        assert!(not_xml.contains("well-formed"), "{not_xml}");
        let sp = parse_saml_metadata(r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>"#)
            .expect_err("no IdP descriptor");
        assert!(sp.contains("IDPSSODescriptor"), "{sp}");
    }

    #[test]
    fn a_dtd_is_refused_before_parsing() {
        let xxe = format!(
            "<!DOCTYPE md [<!ENTITY x SYSTEM \"http://127.0.0.1:9/steal\">]>{}",
            metadata(&format!("{}{SSO}", signing_key()))
        );
        let error = parse_saml_metadata(&xxe).expect_err("refused");
        assert!(error.contains("DTD"), "{error}");
    }

    #[test]
    fn metadata_with_sixty_thousand_attributes_is_refused_before_parsing() {
        let attributes: String = (0..60_000)
            .map(|index| format!(" a{index}=\"x\""))
            .collect();
        let hostile = metadata(&format!("<md:Extensions{attributes}/>"));
        assert!(
            hostile.len() < 1024 * 1024,
            "small enough to pass the size check"
        );
        let error = parse_saml_metadata(&hostile).expect_err("refused");
        assert!(error.contains("attributes"), "{error}");
    }

    #[test]
    fn email_domains_are_normalised_and_checked() {
        assert_eq!(email_domain(" Acme.COM. "), Ok("acme.com".to_owned()));
        assert_eq!(
            email_domain("mail.acme.co.uk"),
            Ok("mail.acme.co.uk".to_owned())
        );
        for bad in [
            "acme",
            "-acme.com",
            "acme..com",
            "acme.123",
            "ac me.com",
            "acme_corp.com",
        ] {
            assert!(email_domain(bad).is_err(), "{bad}");
        }
        assert_eq!(
            domain_of_email("Jane@Acme.com"),
            Some("acme.com".to_owned())
        );
        assert_eq!(domain_of_email("@acme.com"), None);
        assert_eq!(domain_of_email("nobody"), None);
    }

    #[test]
    fn issuer_urls_must_be_https_except_loopback_outside_prod() {
        assert!(check_url("https://sso.acme.com/realms/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/realms/x", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080/realms/x", false).is_err());
        assert!(check_url("http://sso.acme.com", true).is_err());
        assert!(check_url("http://localhost.evil.com", true).is_err());
        assert!(check_url("http://127.0.0.1:1@evil.com/", true).is_err());
        assert!(check_url("http://localhost\\@evil.com/", true).is_err());
        assert!(check_url("https://user:pass@sso.acme.com/", true).is_err());
    }
}
