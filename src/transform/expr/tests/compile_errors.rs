//! Expression tests: what compiling refuses, and where it points.

use super::*;

// ---------------------------------------------------------------- compile errors

#[test]
fn syntax_errors() {
    assert_eq!(err("lower(email").offset, 11);
    assert!(err("lower(email").message.contains("expected ')'"));
    assert_eq!(err("a +").offset, 3);
    err_at("x + 'abc", "'abc", "unterminated string");
    err_at("x = = 1", "= 1", "expected an expression");
    assert!(err("status = 'a' status")
        .message
        .contains("expected an operator"));
    assert_eq!(err("status = 'a' status").offset, 13);
    err_at("x > 1 < 2", "< 2", "cannot be chained");
    err_at("x | 1", "|", "'||'");
    err_at("12abc", "12abc", "invalid number");
    assert_eq!(err("case when true then 1").offset, 21);
    assert!(err("case when true then 1").message.contains("END"));
    err_at("x is 5", "5", "NULL after IS");
    err_at("and", "and", "keyword");
    err_at("cast(x integer)", "integer", "AS");
    err_at("\"\" = 1", "\"\"", "empty quoted identifier");
    assert_eq!(err("").message, "empty expression");
    assert_eq!(err("   -- only a comment").offset, 0);
    let deep = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    assert!(err(&deep).message.contains("nested too deeply"));
    let long = format!("1{}", " + 1".repeat(5000));
    assert!(err(&long).message.contains("nested too deeply"));
    let nots = format!("{}true", "not ".repeat(5000));
    assert!(err(&nots).message.contains("nested too deeply"));
    assert_eq!(
        err(&long).offset,
        4 * 63 + 2,
        "points at the operator that went too deep"
    );
    assert_eq!(ok(&format!("1{}", " + 1".repeat(60)), &[]), s("61"));
    assert!(
        filter(&format!("x = 0{}", " or x = 1".repeat(500)), &[("x", "1")]),
        "flat chains are not limited"
    );
    assert_eq!(
        ok(&format!("'a'{}", " || 'a'".repeat(500)), &[]).map(|s| s.len()),
        Some(501)
    );
}

#[test]
fn name_errors() {
    err_at(
        "lower(emial)",
        "emial",
        "unknown column \"emial\"; did you mean \"email\"?",
    );
    err_at("zzzzzz", "zzzzzz", "available columns: email, first_name");
    err_at(
        "status = \"active\"",
        "\"active\"",
        "write text in single quotes",
    );
    err_at(
        "lowr(email)",
        "lowr",
        "unknown function lowr(); did you mean lower()?",
    );
    err_at(
        "frobnicate(email)",
        "frobnicate",
        "available functions: lower, upper",
    );
    err_at("x::money", "money", "unsupported type money");
    let e = Compiled::compile("a", &[]).expect_err("no columns");
    assert!(e.message.contains("no columns"), "{e}");
}

#[test]
fn arity_errors() {
    err_at(
        "lower(email, 1)",
        "lower",
        "lower() takes 1 argument, got 2: lower(text)",
    );
    err_at(
        "x + substr(email)",
        "substr",
        "substr() takes 2 or 3 arguments, got 1",
    );
    err_at("coalesce()", "coalesce", "at least 1 argument");
    err_at("if(true, 1)", "if", "takes 3 arguments");
}

#[test]
fn type_errors() {
    err_at("amount + 'x'", "'x'", "operator + needs a number, got text");
    err_at("code + 1", "code", "explicit cast");
    err_at("x = 'abc'", "'abc'", "'abc' is not a valid integer value");
    err_at(
        "email = 5",
        "5",
        "cannot mix text and integer (cast one side explicitly, e.g. ::text or ::integer)",
    );
    err_at("not email", "email", "NOT needs a boolean, got text");
    err_at("x > 1 and email", "email", "AND needs a boolean");
    err_at(
        "if(x, 'a', 'b')",
        "x,",
        "the condition of if() needs a boolean, got integer",
    );
    err_at(
        "coalesce(x, email)",
        "email",
        "coalesce(): cannot mix integer and text",
    );
    err_at("substr(email, '2')", "'2'", "needs an integer");
    err_at(
        "payload = payload",
        "payload",
        "json values cannot be compared",
    );
    err_at("is_test::date", "date", "cannot cast boolean to date");
    err_at("payload::integer", "integer", "json_get() first");
    err_at(
        "'abc'::integer",
        "'abc'",
        "invalid input for type integer: 'abc'",
    );
    err_at("'99999'::smallint", "'99999'", "out of range");
    err_at("x::numeric(2000)", "numeric", "precision 2000");
    err_at(
        "date_part('year', email)",
        "email",
        "needs a date or timestamp, got text (text needs an explicit cast, e.g. ::timestamp)",
    );
    err_at(
        "json_get(x, '$.a')",
        "x",
        "json_get() needs json or text, got integer",
    );
    err_at(
        "created_at > '2024-13-01'",
        "'2024-13-01'",
        "not a valid timestamp",
    );
    err_at(
        "email like code",
        "code",
        "LIKE pattern must be a string literal",
    );
    err_at(
        "99999999999999999999999999999999999999999",
        "9",
        "out of range",
    );
    let f = Compiled::compile_filter("email", &cols()).expect_err("not boolean");
    assert_eq!(f.offset, 0);
    assert!(f
        .message
        .contains("a filter must be a boolean expression, but this expression is text"));
    assert!(Compiled::compile_filter("null", &cols()).is_err());
    // Implicit number-to-text conversion is allowed in text positions.
    assert!(Compiled::compile("lower(x) || amount || birth", &cols()).is_ok());
}

#[test]
fn literal_argument_errors() {
    err_at(
        "regex_replace(phone, '(abc', '')",
        "(abc",
        "invalid regular expression: unclosed group",
    );
    err_at(
        "regex_replace(phone, 'a{2,1}', '')",
        "{2,1}",
        "invalid regular expression",
    );
    err_at(
        "regex_replace(phone, code, '')",
        "code",
        "must be a string literal",
    );
    err_at(
        "regex_capture(code, '^([A-Z]+)-', 2)",
        "2)",
        "between 0 and 1",
    );
    err_at(
        "regex_capture(code, '^([A-Z]+)-', x)",
        "x)",
        "integer literal",
    );
    err_at("json_get(payload, '$.a[')", "')", "expected an array index");
    err_at("json_get(payload, 'a.b')", "a.b", "must start with '$'");
    err_at("json_get(payload, '$.a.')", "')", "expected a key name");
    err_at("json_get(payload, '$.a!b')", "!b", "unexpected '!'");
    err_at(
        "json_get(payload, '$[''a''][x]')",
        "x]",
        "expected an array index",
    );
    err_at(
        "json_get(payload, code)",
        "code",
        "must be a string literal",
    );
    err_at(
        "date_part('yr', created_at)",
        "'yr'",
        "invalid date part 'yr'; expected one of year, month",
    );
    err_at(
        "date_part(code, created_at)",
        "code",
        "must be a string literal",
    );
}

#[test]
fn nondeterministic_functions_are_rejected() {
    err_at(
        "now()",
        "now",
        "must be deterministic so that replays and backfills produce identical rows",
    );
    err_at("created_at > NOW()", "NOW", "deterministic");
    err_at("random() > 0.5", "random", "deterministic");
    err_at("gen_random_uuid()", "gen", "deterministic");
    err_at(
        "coalesce(deleted_at, current_timestamp)",
        "current_timestamp",
        "deterministic",
    );
    err_at("birth < current_date", "current_date", "deterministic");
    err_at("nextval('s')", "nextval", "deterministic");
}

#[test]
fn compile_error_display() {
    let e = err("lower(emial)");
    assert_eq!(
        e.to_string(),
        "unknown column \"emial\"; did you mean \"email\"? at column 7:\n  lower(emial)\n        ^"
    );
    let e = err("case\n  when x > 1 then 'a'\n  when x > 'b' then 'c'\nend");
    assert_eq!(e.offset, 38);
    assert!(
        e.to_string()
            .ends_with("at line 3, column 12:\n    when x > 'b' then 'c'\n             ^"),
        "{e}"
    );
    let e = err("x +");
    assert!(
        e.to_string().ends_with("at column 4:\n  x +\n     ^"),
        "{e}"
    );
}
