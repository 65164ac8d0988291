//! A linear pre-scan of an XML document's shape, run before it is parsed: an XML parser's
//! work can grow with the square of an element's attribute count (each new attribute is
//! checked against the others), so a small document with absurd shapes must be refused
//! before a parser sees it.

/// Most attributes, namespace declarations included, one element may carry. Real SAML
/// metadata uses fewer than ten.
pub const MAX_ATTRIBUTES_PER_ELEMENT: usize = 64;
/// Most elements a document may hold. A real IdP's metadata has well under a thousand.
pub const MAX_ELEMENTS: usize = 20_000;

/// Refuses a document whose shape is beyond [`MAX_ATTRIBUTES_PER_ELEMENT`] or
/// [`MAX_ELEMENTS`]; costs one pass over its bytes. It does not judge well-formedness
/// (the parser does): it only counts.
pub fn check(xml: &str) -> Result<(), String> {
    let bytes = xml.as_bytes();
    let mut elements = 0usize;
    let mut at = 0usize;
    while let Some(offset) = xml[at..].find('<') {
        let start = at + offset;
        let rest = &xml[start..];
        let skipped_to = [("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>")]
            .iter()
            .find(|(open, _)| rest.starts_with(open))
            .map(|(_, close)| {
                rest.find(close)
                    .map_or(xml.len(), |end| start + end + close.len())
            });
        if let Some(next) = skipped_to {
            at = next;
            continue;
        }
        if rest.starts_with("</") || rest.starts_with("<!") {
            at = start + 1;
            continue;
        }
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(format!("more than {MAX_ELEMENTS} elements"));
        }
        let (attributes, end) = scan_start_tag(bytes, start + 1);
        if attributes > MAX_ATTRIBUTES_PER_ELEMENT {
            return Err(format!(
                "an element carries more than {MAX_ATTRIBUTES_PER_ELEMENT} attributes"
            ));
        }
        at = end;
    }
    Ok(())
}

/// Counts the `=` outside quotes from `from` to the end of the tag; returns the count and
/// the position after the tag.
fn scan_start_tag(bytes: &[u8], from: usize) -> (usize, usize) {
    let mut quote = None;
    let mut attributes = 0;
    for (position, &byte) in bytes.iter().enumerate().skip(from) {
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'=') => attributes += 1,
            (None, b'>') => return (attributes, position + 1),
            (None, _) => {}
        }
    }
    (attributes, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element_with_attributes(count: usize) -> String {
        let attributes: String = (0..count).map(|index| format!(" a{index}=\"x\"")).collect();
        format!("<root{attributes}/>")
    }

    #[test]
    fn ordinary_documents_pass() {
        let xml = r#"<?xml version="1.0"?><!-- a <comment> with = signs -->
            <a xmlns="urn:x" b='1' c="2 > 1"><![CDATA[<not an element x="1">]]><d/></a>"#;
        assert_eq!(check(xml), Ok(()));
    }

    #[test]
    fn an_element_with_too_many_attributes_is_refused() {
        assert_eq!(
            check(&element_with_attributes(MAX_ATTRIBUTES_PER_ELEMENT)),
            Ok(())
        );
        let error =
            check(&element_with_attributes(MAX_ATTRIBUTES_PER_ELEMENT + 1)).expect_err("refused");
        assert!(error.contains("attributes"), "{error}");
    }

    #[test]
    fn equals_signs_inside_values_are_not_attributes() {
        let value = "=".repeat(10 * MAX_ATTRIBUTES_PER_ELEMENT);
        assert_eq!(check(&format!("<a b=\"{value}\" c='{value}'/>")), Ok(()));
    }

    #[test]
    fn a_document_with_too_many_elements_is_refused() {
        let xml = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        let error = check(&xml).expect_err("refused");
        assert!(error.contains("elements"), "{error}");
    }

    #[test]
    fn an_unterminated_tag_or_comment_ends_the_scan() {
        assert_eq!(check("<a b=\"unterminated"), Ok(()));
        assert_eq!(check("<!-- never closed <a x=1>"), Ok(()));
    }
}
