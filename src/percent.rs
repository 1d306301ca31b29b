//! RFC 3986 percent-encoding for values placed into URL templates: everything but the unreserved
//! characters is encoded, so a value can never add a path segment, query or host.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Every byte except ALPHA / DIGIT / "-" / "." / "_" / "~".
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` with everything but unreserved characters percent-encoded.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_pass() {
        assert_eq!(super::encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(super::encode("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(super::encode("ü"), "%C3%BC");
    }
}
