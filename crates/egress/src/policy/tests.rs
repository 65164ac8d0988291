use super::*;

/// Every range the strict policy refuses, with an address in it, as written in a URL.
const REFUSED: &[(&str, &str)] = &[
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.1.2.3", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.255", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("100.64.0.1", "shared address space (CGNAT)"),
    ("100.127.255.255", "shared address space (CGNAT)"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.254", "a cloud metadata service"),
    ("100.100.100.200", "a cloud metadata service"),
    ("0.0.0.0", "this network (0.0.0.0/8)"),
    ("0.1.2.3", "this network (0.0.0.0/8)"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.1", "documentation"),
    ("203.0.113.1", "documentation"),
    ("240.0.0.1", "reserved"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("198.18.0.1", "benchmarking"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fd00:ec2::254", "a cloud metadata service"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard-only"),
    ("2001::1", "IETF protocol assignments"),
    ("64:ff9b:1::1", "local-use NAT64"),
    // IPv4-mapped, -compatible and -translated forms, NAT64 and 6to4: judged as the IPv4
    // address they lead to.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:1", "loopback"),
    ("::ffff:10.0.0.1", "private (RFC 1918)"),
    ("::ffff:169.254.169.254", "a cloud metadata service"),
    ("::ffff:100.64.0.1", "shared address space (CGNAT)"),
    ("::ffff:0.0.0.0", "this network (0.0.0.0/8)"),
    ("::127.0.0.1", "loopback"),
    ("::192.168.0.1", "private (RFC 1918)"),
    ("::ffff:0:127.0.0.1", "loopback"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata service"),
    ("2002:7f00:1::", "loopback"),
    ("2002:c0a8:101::1", "private (RFC 1918)"),
    ("2002:a9fe:a9fe::", "a cloud metadata service"),
];

const PUBLIC: &[&str] = &[
    "1.1.1.1",
    "8.8.8.8",
    "93.184.216.34",
    "172.15.255.255",
    "172.32.0.1",
    "100.63.255.255",
    "100.128.0.1",
    "169.253.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
];

fn address(text: &str) -> IpAddr {
    text.parse().expect("a test address")
}

#[test]
fn every_non_public_range_is_named_and_public_addresses_are_public() {
    for (text, range) in REFUSED {
        let found = match reach(address(text)) {
            Reach::Internal(name) | Reach::Never(name) => name,
            Reach::Public => "public",
        };
        assert_eq!(found, *range, "{text}");
    }
    for text in PUBLIC {
        assert_eq!(reach(address(text)), Reach::Public, "{text}");
    }
}

#[test]
fn the_strict_policy_refuses_every_non_public_address_the_development_one_only_the_never_ranges() {
    for (text, _) in REFUSED {
        let ip = address(text);
        assert!(!Policy::STRICT.permits(ip), "{text}");
        let never = matches!(reach(ip), Reach::Never(_));
        assert_eq!(Policy::DEVELOPMENT.permits(ip), !never, "{text}");
    }
    for text in PUBLIC {
        assert!(Policy::STRICT.permits(address(text)), "{text}");
    }
}

#[test]
fn metadata_services_stay_refused_even_where_private_addresses_are_allowed() {
    for text in [
        "169.254.169.254",
        "::ffff:169.254.169.254",
        "fd00:ec2::254",
        "2002:a9fe:a9fe::",
    ] {
        assert!(!Policy::DEVELOPMENT.permits(address(text)), "{text}");
    }
    assert!(Policy::DEVELOPMENT.permits(address("169.254.1.1")));
}

#[test]
fn address_literals_in_urls_are_checked_in_every_spelling() {
    for url in [
        "https://127.0.0.1/",
        "https://127.1/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://0177.0.0.1/",
        "https://127.0.0.1./",
        "https://[::1]:8443/",
        "https://[::ffff:127.0.0.1]/",
        "https://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "https://169.254.169.254/latest/meta-data/",
        "https://0.0.0.0:8090/",
        "https://10.0.0.1/metadata",
        "https://[fd00:ec2::254]/",
        "https://[2002:7f00:1::]/",
    ] {
        assert!(
            matches!(
                Policy::STRICT.check_url(url),
                Err(UrlError::NotPublic { .. })
            ),
            "{url}: {:?}",
            Policy::STRICT.check_url(url)
        );
    }
    assert!(
        Policy::DEVELOPMENT
            .check_url("http://127.0.0.1:8080/x")
            .is_ok()
    );
    assert_eq!(
        Policy::DEVELOPMENT.check_url("http://169.254.169.254/"),
        Err(UrlError::NotPublic {
            range: "a cloud metadata service"
        })
    );
}

#[test]
fn user_names_and_passwords_are_refused_in_any_form() {
    for policy in [Policy::STRICT, Policy::DEVELOPMENT] {
        for url in [
            "https://user:pass@idp.example.com/",
            "https://user@idp.example.com/",
            "https://:pass@idp.example.com/",
            "https://@idp.example.com/",
            "https://127.0.0.1:1@idp.example.com/",
            "http://127.0.0.1:1@idp.example.com/",
            "https://idp.example.com@127.0.0.1/",
            "https://a@b@idp.example.com/",
            "https://%40@idp.example.com/",
            "http:@idp.example.com/",
            "https:/user@idp.example.com/",
            "https:////user@idp.example.com/",
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(UrlError::Credentials),
                "{url} {policy:?}"
            );
        }
        assert!(
            policy
                .check_url("https://idp.example.com/users/@me?who=a@b#@")
                .is_ok(),
            "an @ in the path, query or fragment is no credential"
        );
    }
}

/// What a policy says of a URL.
type Verdict = Result<(), UrlError>;

#[test]
fn only_https_is_allowed_under_the_strict_policy_and_http_too_under_the_development_one() {
    let cases: &[(&str, Verdict, Verdict)] = &[
        ("https://idp.example.com/saml", Ok(()), Ok(())),
        ("HTTPS://IDP.EXAMPLE.COM", Ok(()), Ok(())),
        (
            "http://idp.example.com/saml",
            Err(UrlError::HttpsOnly),
            Ok(()),
        ),
        (
            "ftp://idp.example.com/",
            Err(UrlError::HttpsOnly),
            Err(UrlError::Scheme),
        ),
        (
            "file:///etc/passwd",
            Err(UrlError::HttpsOnly),
            Err(UrlError::Scheme),
        ),
        (
            "gopher://idp.example.com/",
            Err(UrlError::HttpsOnly),
            Err(UrlError::Scheme),
        ),
        (
            "data:text/plain,x",
            Err(UrlError::HttpsOnly),
            Err(UrlError::Scheme),
        ),
        (
            "idp.example.com",
            Err(UrlError::NotAUrl),
            Err(UrlError::NotAUrl),
        ),
        ("/relative", Err(UrlError::NotAUrl), Err(UrlError::NotAUrl)),
        ("https://", Err(UrlError::NotAUrl), Err(UrlError::NotAUrl)),
        (
            "https://exa mple.com",
            Err(UrlError::Unprintable),
            Err(UrlError::Unprintable),
        ),
        (
            " https://idp.example.com",
            Err(UrlError::Unprintable),
            Err(UrlError::Unprintable),
        ),
        (
            "https://idp.example.com\n",
            Err(UrlError::Unprintable),
            Err(UrlError::Unprintable),
        ),
        (
            "https://127.0.0.1\\@idp.example.com/",
            Err(UrlError::Unprintable),
            Err(UrlError::Unprintable),
        ),
    ];
    for (url, strict, development) in cases {
        assert_eq!(&Policy::STRICT.check_url(url).map(|_| ()), strict, "{url}");
        assert_eq!(
            &Policy::DEVELOPMENT.check_url(url).map(|_| ()),
            development,
            "{url}"
        );
    }
    let long = format!("https://idp.example.com/{}", "a".repeat(MAX_URL_LENGTH));
    assert_eq!(Policy::STRICT.check_url(&long), Err(UrlError::TooLong));
}

#[test]
fn rule_messages_name_the_rule_and_never_the_range() {
    let message = Policy::STRICT
        .check_url("https://169.254.169.254/")
        .expect_err("refused")
        .to_string();
    assert_eq!(message, "must point to a public address");
}

#[test]
fn the_operator_policy_reaches_the_platforms_network_but_never_metadata_services() {
    let https_only = Policy::operator(false);
    assert!(https_only.check_url("https://10.0.0.8/realms/x").is_ok());
    assert!(
        https_only
            .check_url("https://keycloak.internal/realms/x")
            .is_ok()
    );
    assert_eq!(
        https_only.check_url("http://10.0.0.8/realms/x"),
        Err(UrlError::HttpsOnly)
    );
    assert!(
        Policy::operator(true)
            .check_url("http://127.0.0.1:8080/realms/x")
            .is_ok()
    );
    for policy in [Policy::operator(false), Policy::operator(true)] {
        assert!(policy.permits("10.1.2.3".parse().expect("an address")));
        assert!(!policy.permits("169.254.169.254".parse().expect("an address")));
        assert!(!policy.permits("fd00:ec2::254".parse().expect("an address")));
    }
}
