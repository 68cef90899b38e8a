use super::value::Num;
use super::*;
use proptest::prelude::*;

const SCHEMA: &[(&str, &str)] = &[
    ("email", "text"),
    ("first_name", "character varying(40)"),
    ("last_name", "text"),
    ("nickname", "text"),
    ("phone", "text"),
    ("code", "text"),
    ("payload", "jsonb"),
    ("created_at", "timestamp with time zone"),
    ("amount", "numeric(10,2)"),
    ("status", "text"),
    ("deleted_at", "timestamp without time zone"),
    ("is_test", "boolean"),
    ("kind", "text"),
    ("flag", "text"),
    ("d", "text"),
    ("x", "integer"),
    ("qty", "bigint"),
    ("birth", "date"),
    ("ratio", "double precision"),
    ("Mixed Case", "text"),
    ("id", "uuid"),
    ("tags", "text[]"),
];

fn cols() -> Vec<ColumnRef<'static>> {
    SCHEMA
        .iter()
        .map(|(name, sql_type)| ColumnRef { name, sql_type })
        .collect()
}

fn row<'a>(vals: &[(&str, &'a str)]) -> Vec<Option<&'a str>> {
    let mut r = vec![None; SCHEMA.len()];
    for (name, v) in vals {
        let i = SCHEMA
            .iter()
            .position(|(n, _)| n == name)
            .expect("column in schema");
        r[i] = Some(*v);
    }
    r
}

fn compile(src: &str) -> Compiled {
    Compiled::compile(src, &cols()).unwrap_or_else(|e| panic!("{e}"))
}

fn run(src: &str, vals: &[(&str, &str)]) -> Result<Option<String>, EvalError> {
    compile(src).eval(&row(vals))
}

fn ok(src: &str, vals: &[(&str, &str)]) -> Option<String> {
    run(src, vals).unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn s(x: &str) -> Option<String> {
    Some(x.to_owned())
}

fn filter(src: &str, vals: &[(&str, &str)]) -> bool {
    let c = Compiled::compile_filter(src, &cols()).unwrap_or_else(|e| panic!("{e}"));
    c.eval_filter(&row(vals))
        .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn err(src: &str) -> CompileError {
    Compiled::compile(src, &cols()).expect_err(src)
}

/// Asserts a compile error at the char offset of `at` in `src` whose message contains `msg`.
fn err_at(src: &str, at: &str, msg: &str) {
    let e = err(src);
    let want = src
        .find(at)
        .unwrap_or_else(|| panic!("{at:?} not in {src:?}"));
    assert_eq!(e.offset, want, "{src}: {e}");
    assert!(
        e.message.contains(msg),
        "{src}: {:?} lacks {msg:?}",
        e.message
    );
}

const PAYLOAD: &str = r#"{"address": {"city": "Paris", "zip": "75001"}, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2"}], "n": null, "big": 123456789012345678901234567890.50, "q": "a\"b\u00e9", "k\"ey": true}"#;

mod compile_errors;
mod eval_errors;
mod examples;
mod properties;
