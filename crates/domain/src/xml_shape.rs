//! A linear pre-scan of an XML document's shape, run before it is parsed: an XML parser's
//! work can grow with the square of an element's attribute count (each new attribute is
//! checked against the others), so a small document with absurd shapes must be refused
//! before a parser sees it.

/// Most attributes, namespace declarations included, one element may carry. Real SAML
/// metadata uses fewer than ten.
pub const MAX_ATTRIBUTES_PER_ELEMENT: usize = 64;
/// Most elements a document may hold. A real IdP's metadata has well under a thousand.
pub const MAX_ELEMENTS: usize = 20_000;
/// Deepest nesting of elements. Real SAML metadata nests fewer than fifteen deep.
pub const MAX_DEPTH: usize = 64;
/// Most namespace declarations in a whole document: a parser resolves every name against
/// the declarations in scope, so nested declarations multiply its work. Real metadata
/// declares fewer than twenty.
pub const MAX_NAMESPACE_DECLARATIONS: usize = 256;

/// Refuses a document whose shape is beyond [`MAX_ATTRIBUTES_PER_ELEMENT`],
/// [`MAX_ELEMENTS`], [`MAX_DEPTH`] or [`MAX_NAMESPACE_DECLARATIONS`]; costs one pass over
/// its bytes. It does not judge well-formedness
/// (the parser does): it only counts.
pub fn check(xml: &str) -> Result<(), String> {
    let bytes = xml.as_bytes();
    let mut elements = 0usize;
    let mut depth = 0usize;
    let mut declarations = 0usize;
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
        if rest.starts_with("</") {
            depth = depth.saturating_sub(1);
            at = start + 1;
            continue;
        }
        if rest.starts_with("<!") {
            at = start + 1;
            continue;
        }
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(format!("more than {MAX_ELEMENTS} elements"));
        }
        let tag = scan_start_tag(bytes, start + 1);
        if tag.attributes > MAX_ATTRIBUTES_PER_ELEMENT {
            return Err(format!(
                "an element carries more than {MAX_ATTRIBUTES_PER_ELEMENT} attributes"
            ));
        }
        declarations += tag.declarations;
        if declarations > MAX_NAMESPACE_DECLARATIONS {
            return Err(format!(
                "more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations"
            ));
        }
        if !tag.self_closing {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(format!("elements nested more than {MAX_DEPTH} deep"));
            }
        }
        at = tag.end;
    }
    Ok(())
}

/// What a start tag holds, as far as its shape goes.
struct StartTag {
    /// `=` signs outside quoted values: one per attribute.
    attributes: usize,
    /// Attributes whose name starts with `xmlns`.
    declarations: usize,
    /// Whether it ends with `/>`.
    self_closing: bool,
    /// The position after its `>` (or the end of the text).
    end: usize,
}

/// Reads a start tag from `from` (just after its `<`) to its end.
fn scan_start_tag(bytes: &[u8], from: usize) -> StartTag {
    let mut quote = None;
    let mut tag = StartTag {
        attributes: 0,
        declarations: 0,
        self_closing: false,
        end: bytes.len(),
    };
    for (position, &byte) in bytes.iter().enumerate().skip(from) {
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(byte),
            (None, b'=') => tag.attributes += 1,
            (None, b'>') => {
                tag.self_closing = bytes[position - 1] == b'/';
                tag.end = position + 1;
                return tag;
            }
            (None, _) => {
                let starts_name = bytes[position - 1].is_ascii_whitespace();
                if starts_name && bytes[position..].starts_with(b"xmlns") {
                    tag.declarations += 1;
                }
            }
        }
    }
    tag
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
    fn nesting_deeper_than_the_limit_is_refused() {
        let nested = |depth: usize| format!("{}{}", "<e>".repeat(depth), "</e>".repeat(depth));
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        let error = check(&nested(MAX_DEPTH + 1)).expect_err("refused");
        assert!(error.contains("nested"), "{error}");
        let siblings = format!("<a>{}</a>", "<e><f/></e>".repeat(1000));
        assert_eq!(check(&siblings), Ok(()), "closed elements do not add depth");
    }

    #[test]
    fn nested_namespace_declarations_beyond_the_limit_are_refused() {
        let level = |depth: usize| {
            let declarations: String = (0..63)
                .map(|index| format!(" xmlns:n{depth}_{index}=\"u{index}\""))
                .collect();
            format!("<e{declarations}>")
        };
        let hostile: String = (0..10).map(level).collect();
        let error = check(&hostile).expect_err("refused");
        assert!(error.contains("namespace declarations"), "{error}");
    }

    #[test]
    fn an_unterminated_tag_or_comment_ends_the_scan() {
        assert_eq!(check("<a b=\"unterminated"), Ok(()));
        assert_eq!(check("<!-- never closed <a x=1>"), Ok(()));
    }
}
