//! The API key format, `tr_<env>_<prefix>_<secret>`, over generated input: every key of the
//! form is read with its prefix, and any other text is refused without a panic.

use auth::keys::PresentedKey;
use proptest::prelude::*;

fn is_lower_hex(text: &str, length: usize) -> bool {
    text.len() == length
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn follows_the_format(text: &str) -> bool {
    let parts: Vec<&str> = text.splitn(4, '_').collect();
    matches!(parts.as_slice(), [tag, env, prefix, secret]
        if *tag == "tr"
            && !env.is_empty()
            && env.bytes().all(|byte| byte.is_ascii_lowercase())
            && is_lower_hex(prefix, 16)
            && is_lower_hex(secret, 64))
}

proptest! {
    #[test]
    fn every_key_of_the_format_is_read_with_its_prefix(
        env in "[a-z]{1,10}",
        prefix in "[0-9a-f]{16}",
        secret in "[0-9a-f]{64}",
    ) {
        let whole = format!("tr_{env}_{prefix}_{secret}");
        let presented = PresentedKey::parse(&whole);
        prop_assert!(presented.is_some(), "{whole} refused");
        let presented = presented.expect("checked");
        prop_assert_eq!(presented.prefix, prefix.as_str());
        prop_assert_eq!(presented.whole, whole.as_str());
    }

    #[test]
    fn any_text_is_read_as_a_key_exactly_when_it_follows_the_format(
        text in prop_oneof!["\\PC{0,120}", "tr_[a-zA-Z_]{0,4}_[0-9a-fA-F_]{14,18}_[0-9a-fA-F]{62,66}"]
    ) {
        prop_assert_eq!(PresentedKey::parse(&text).is_some(), follows_the_format(&text), "{}", text);
    }
}
