//! SQL quoting, in one place: identifiers and literals for the statements remodel builds.
//!
//! Owns only the two escapes. Must never be used for values that can be sent as parameters
//! (data travels as parameters or COPY text, never spliced into SQL).

/// `"name"`, with embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (for `standard_conforming_strings = on`, the default
/// since PostgreSQL 9.1, and what remodel's sessions use).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_the_quote_it_wraps_in() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("plain"), "\"plain\"");
    }
}
