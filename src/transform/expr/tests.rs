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

// ---------------------------------------------------------------- the brief's examples

#[test]
fn text_functions() {
    assert_eq!(
        ok("lower(trim(email))", &[("email", "  Foo@Example.COM  ")]),
        s("foo@example.com")
    );
    let names = [("first_name", "Ada"), ("last_name", "Lovelace")];
    assert_eq!(
        ok("concat(first_name, ' ', last_name)", &names),
        s("Ada Lovelace")
    );
    assert_eq!(
        ok("first_name || ' ' || last_name", &names),
        s("Ada Lovelace")
    );
    assert_eq!(
        ok("concat(first_name, ' ', last_name)", &names[..1]),
        s("Ada ")
    );
    assert_eq!(ok("first_name || ' ' || last_name", &names[..1]), None);
    assert_eq!(ok("upper(email)", &[("email", "ab_é")]), s("AB_É"));
    assert_eq!(ok("ltrim(email)", &[("email", "  a  ")]), s("a  "));
    assert_eq!(ok("rtrim(email)", &[("email", "  a  ")]), s("  a"));
    assert_eq!(ok("trim(email, 'x-')", &[("email", "x-ax-")]), s("a"));
    assert_eq!(
        ok("trim(email)", &[("email", "\ta ")]),
        s("\ta"),
        "PostgreSQL trims spaces only"
    );
    assert_eq!(ok("length(email)", &[("email", "héllo")]), s("5"));
    assert_eq!(ok("substr(email, 2, 3)", &[("email", "hello")]), s("ell"));
    assert_eq!(ok("substr(email, 0, 3)", &[("email", "hello")]), s("he"));
    assert_eq!(ok("substr(email, 3)", &[("email", "hello")]), s("llo"));
    assert_eq!(ok("substr(email, 2, 2)", &[("email", "héllo")]), s("él"));
    assert_eq!(ok("substr(email, 9)", &[("email", "hello")]), s(""));
    assert_eq!(
        ok("replace(email, 'l', 'L')", &[("email", "hello")]),
        s("heLLo")
    );
    assert_eq!(
        ok("replace(email, '', 'L')", &[("email", "hello")]),
        s("hello")
    );
    assert_eq!(
        ok("split_part(email, ',', 2)", &[("email", "a,b,c")]),
        s("b")
    );
    assert_eq!(
        ok("split_part(email, ',', -1)", &[("email", "a,b,c")]),
        s("c")
    );
    assert_eq!(
        ok("split_part(email, ',', 5)", &[("email", "a,b,c")]),
        s("")
    );
    assert_eq!(
        ok("split_part(email, '@', 2)", &[("email", "me@x.org")]),
        s("x.org")
    );
    assert_eq!(
        ok("upper(5)", &[]),
        s("5"),
        "numbers convert to text implicitly"
    );
    assert_eq!(ok("'it''s' || x", &[("x", "7")]), s("it's7"));
}

#[test]
fn coalesce_nullif_if_case() {
    let e = "coalesce(nickname, first_name, 'unknown')";
    assert_eq!(
        ok(e, &[("nickname", "Adi"), ("first_name", "Ada")]),
        s("Adi")
    );
    assert_eq!(ok(e, &[("first_name", "Ada")]), s("Ada"));
    assert_eq!(ok(e, &[]), s("unknown"));
    assert_eq!(ok("nullif(status, '')", &[("status", "")]), None);
    assert_eq!(ok("nullif(status, '')", &[("status", "a")]), s("a"));
    assert_eq!(ok("nullif(x, 0)", &[("x", "0")]), None);
    let e = "if(amount > 1000, 'large', 'small')";
    assert_eq!(ok(e, &[("amount", "1500.00")]), s("large"));
    assert_eq!(ok(e, &[("amount", "999.99")]), s("small"));
    assert_eq!(
        ok(e, &[]),
        s("small"),
        "a NULL condition takes the else branch"
    );
    let e = "case when status = 'a' then 'active' when status = 'c' then 'closed' else 'other' end";
    assert_eq!(ok(e, &[("status", "a")]), s("active"));
    assert_eq!(ok(e, &[("status", "c")]), s("closed"));
    assert_eq!(ok(e, &[("status", "z")]), s("other"));
    assert_eq!(ok(e, &[]), s("other"));
    assert_eq!(
        ok(
            "case status when 'a' then 1 when 'b' then 2.5 end",
            &[("status", "a")]
        ),
        s("1")
    );
    assert_eq!(
        ok("case status when 'a' then 1 end", &[("status", "q")]),
        None
    );
    assert_eq!(
        compile("case status when 'a' then 1 when 'b' then 2.5 end").result_type(),
        Type::Numeric
    );
    assert_eq!(
        ok("coalesce(birth, created_at)", &[("birth", "2024-03-01")]),
        s("2024-03-01 00:00:00")
    );
    assert_eq!(ok("coalesce(x, 0) + 1", &[]), s("1"));
    assert_eq!(
        ok("coalesce(amount, '0')", &[]),
        s("0"),
        "literal adopts numeric"
    );
}

#[test]
fn regex_functions() {
    assert_eq!(
        ok(
            "regex_replace(phone, '[^0-9]', '')",
            &[("phone", "+1 (555) 123-4567")]
        ),
        s("15551234567")
    );
    let e = "regex_capture(code, '^([A-Z]+)-', 1)";
    assert_eq!(ok(e, &[("code", "ABC-123")]), s("ABC"));
    assert_eq!(ok(e, &[("code", "abc-123")]), None);
    assert_eq!(
        ok("regex_capture(code, '[0-9]+', 0)", &[("code", "ab12cd")]),
        s("12")
    );
    assert_eq!(
        ok("regex_capture(code, '(a)|(b)', 2)", &[("code", "a")]),
        None
    );
    assert_eq!(
        ok(
            r"regex_replace(code, '(\w+)-(\w+)', '\2-\1 $1 \&')",
            &[("code", "ab-cd")]
        ),
        s("cd-ab $1 ab-cd")
    );
    assert_eq!(
        ok(
            "regex_replace(code, 'b', status)",
            &[("code", "abc"), ("status", r"[\&]")]
        ),
        s("a[b]c")
    );
    assert_eq!(
        ok("regex_replace(code, 'z', 'y')", &[("code", "abc")]),
        s("abc")
    );
}

#[test]
fn json_get_paths() {
    let p = [("payload", PAYLOAD)];
    assert_eq!(ok("json_get(payload, '$.address.city')", &p), s("Paris"));
    assert_eq!(ok("json_get(payload, '$.items[0].sku')", &p), s("A-1"));
    assert_eq!(ok("json_get(payload, '$.items[1].sku')", &p), s("B-2"));
    assert_eq!(ok("json_get(payload, '$.items[0].qty')", &p), s("2"));
    assert_eq!(
        ok("json_get(payload, '$.address')", &p),
        s(r#"{"city": "Paris", "zip": "75001"}"#)
    );
    assert_eq!(
        ok("json_get(payload, '$.items[1]')", &p),
        s(r#"{"sku": "B-2"}"#)
    );
    assert_eq!(
        ok("json_get(payload, '$.big')", &p),
        s("123456789012345678901234567890.50")
    );
    assert_eq!(ok("json_get(payload, '$.q')", &p), s("a\"bé"));
    assert_eq!(ok(r#"json_get(payload, '$."k\"ey"')"#, &p), s("true"));
    assert_eq!(
        ok("json_get(payload, '$[''address''][\"zip\"]')", &p),
        s("75001")
    );
    assert_eq!(
        ok("json_get(payload, '$.n')", &p),
        None,
        "JSON null is NULL"
    );
    assert_eq!(ok("json_get(payload, '$.missing')", &p), None);
    assert_eq!(ok("json_get(payload, '$.items[7]')", &p), None);
    assert_eq!(ok("json_get(payload, '$.address.city.x')", &p), None);
    assert_eq!(ok("json_get(payload, '$.items.sku')", &p), None);
    assert_eq!(
        ok("json_get(payload, '$')", &[("payload", " [1, 2] ")]),
        s("[1, 2]")
    );
    assert_eq!(
        ok("json_get(code, '$.a')", &[("code", r#"{"a":"b"}"#)]),
        s("b"),
        "text columns work too"
    );
    assert_eq!(
        ok("json_get(payload, '$.items[0].qty')::integer + 1", &p),
        s("3")
    );
    assert_eq!(ok("json_get(payload, '$.a')", &[]), None);
}

#[test]
fn date_parts() {
    let t = [("created_at", "2024-03-01 12:34:56.789+00")];
    let part = |p: &str| ok(&format!("date_part('{p}', created_at)"), &t);
    assert_eq!(part("year"), s("2024"));
    assert_eq!(part("YEAR"), s("2024"));
    assert_eq!(part("month"), s("3"));
    assert_eq!(part("day"), s("1"));
    assert_eq!(part("hour"), s("12"));
    assert_eq!(part("minute"), s("34"));
    assert_eq!(part("second"), s("56.789"));
    assert_eq!(part("dow"), s("5"));
    assert_eq!(part("doy"), s("61"));
    assert_eq!(part("epoch"), s("1709296496.789"));
    let off = [("created_at", "2024-03-01 12:34:56+05:30")];
    assert_eq!(ok("date_part('hour', created_at)", &off), s("12"));
    assert_eq!(ok("date_part('epoch', created_at)", &off), s("1709276696"));
    assert_eq!(
        ok(
            "date_part('epoch', deleted_at)",
            &[("deleted_at", "1970-01-02 00:00:00")]
        ),
        s("86400")
    );
    assert_eq!(
        ok("date_part('dow', birth)", &[("birth", "2024-03-03")]),
        s("0")
    );
    assert_eq!(
        ok("date_part('year', birth)", &[("birth", "0044-03-15 BC")]),
        s("-44")
    );
    assert_eq!(
        ok("date_part('year', birth)", &[("birth", "infinity")]),
        s("Infinity")
    );
    assert_eq!(
        ok("date_part('month', birth)", &[("birth", "infinity")]),
        None
    );
    assert_eq!(ok("date_part('year', created_at) = 2024", &t), s("true"));
}

#[test]
fn casts() {
    assert_eq!(ok("amount::numeric", &[("amount", "12.50")]), s("12.50"));
    assert_eq!(ok("cast(code as integer)", &[("code", " 42 ")]), s("42"));
    assert_eq!(ok("CAST(code AS bigint) * 2", &[("code", "-7")]), s("-14"));
    assert_eq!(ok("flag::boolean", &[("flag", "t")]), s("true"));
    assert_eq!(ok("flag::boolean", &[("flag", "No")]), s("false"));
    assert_eq!(ok("flag::bool", &[("flag", "on")]), s("true"));
    assert_eq!(ok("d::date", &[("d", "2024-03-01")]), s("2024-03-01"));
    assert_eq!(
        ok("d::date", &[("d", "2024-03-01 23:59:59+02")]),
        s("2024-03-01")
    );
    assert_eq!(ok("x::text", &[("x", "7")]), s("7"));
    assert_eq!(ok("x::text || 'a'", &[("x", "7")]), s("7a"));
    assert_eq!(
        ok("d::timestamp", &[("d", "2024-03-01T10:00:00Z")]),
        s("2024-03-01 10:00:00")
    );
    assert_eq!(
        ok("d::timestamptz", &[("d", "2024-03-01T10:00:00Z")]),
        s("2024-03-01 10:00:00+00")
    );
    assert_eq!(
        ok(
            "d::timestamp with time zone",
            &[("d", "2024-03-01 10:00-0330")]
        ),
        s("2024-03-01 10:00:00-03:30")
    );
    assert_eq!(
        ok(
            "created_at::date",
            &[("created_at", "2024-03-01 00:30:00+02")]
        ),
        s("2024-03-01")
    );
    assert_eq!(
        ok("birth::timestamp", &[("birth", "2024-03-01")]),
        s("2024-03-01 00:00:00")
    );
    assert_eq!(ok("amount::integer", &[("amount", "2.50")]), s("3"));
    assert_eq!(ok("amount::integer", &[("amount", "-2.50")]), s("-3"));
    assert_eq!(
        ok("amount::numeric(5,1)", &[("amount", "12.55")]),
        s("12.6")
    );
    assert_eq!(ok("x::numeric(6,2)", &[("x", "12")]), s("12.00"));
    assert_eq!(
        ok("ratio::numeric", &[("ratio", "1.5e-07")]),
        s("0.00000015")
    );
    assert_eq!(ok("x::double precision / 4", &[("x", "1")]), s("0.25"));
    assert_eq!(ok("is_test::integer", &[("is_test", "t")]), s("1"));
    assert_eq!(ok("x::boolean", &[("x", "0")]), s("false"));
    assert_eq!(ok("code::varchar(3)", &[("code", "abcdef")]), s("abc"));
    assert_eq!(
        ok(
            "code::uuid",
            &[("code", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")]
        ),
        s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(
        ok(
            "code::uuid",
            &[("code", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}")]
        ),
        s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(
        ok("code::jsonb", &[("code", r#" {"a": [1, 2.50]} "#)]),
        s(r#" {"a": [1, 2.50]} "#)
    );
    assert_eq!(ok("payload::text", &[("payload", "[1]")]), s("[1]"));
    assert_eq!(ok("'2024-03-01'::date", &[]), s("2024-03-01"));
    assert_eq!(ok("'12'::integer + 1", &[]), s("13"));
    assert_eq!(ok("(-5)::text", &[]), s("-5"));
    assert_eq!(compile("x::numeric(10,2)").result_type(), Type::Numeric);
}

#[test]
fn filters() {
    let f = "status <> 'draft' and deleted_at is null";
    assert!(filter(f, &[("status", "live")]));
    assert!(!filter(f, &[("status", "draft")]));
    assert!(!filter(
        f,
        &[("status", "live"), ("deleted_at", "2024-01-01 00:00:00")]
    ));
    assert!(
        !filter(f, &[]),
        "NULL status: comparison is NULL, which filters out"
    );
    assert!(filter("not is_test", &[("is_test", "f")]));
    assert!(!filter("not is_test", &[("is_test", "t")]));
    assert!(!filter("not is_test", &[]));
    assert!(filter("kind in ('a', 'b')", &[("kind", "b")]));
    assert!(!filter("kind in ('a', 'b')", &[("kind", "c")]));
    assert!(filter("kind not in ('a', 'b')", &[("kind", "c")]));
    assert!(filter("status != 'x' OR is_test", &[("status", "y")]));
    assert!(filter(
        "created_at >= '2024-01-01' and created_at < '2024-01-02 00:00:00+00'",
        &[("created_at", "2024-01-01 10:00:00+00")]
    ));
    assert!(
        filter(
            "created_at = '2024-01-01 12:00:00+02'",
            &[("created_at", "2024-01-01 10:00:00+00")]
        ),
        "instants compare"
    );
    assert!(filter(
        "birth < created_at",
        &[
            ("birth", "2024-01-01"),
            ("created_at", "2024-01-01 00:00:01+00")
        ]
    ));
    assert!(filter("x between 1 and 10", &[("x", "10")]));
    assert!(filter("x not between 1 and 10", &[("x", "11")]));
    assert!(filter("amount between 1 and 2.5", &[("amount", "2.50")]));
    assert!(filter(
        "email like '%@example.com'",
        &[("email", "a@example.com")]
    ));
    assert!(!filter(
        "email like '%@example.com'",
        &[("email", "a@example.org")]
    ));
    assert!(filter("email ilike 'A\\_%'", &[("email", "a_b")]));
    assert!(!filter("email like 'a\\_%'", &[("email", "ab")]));
    assert!(filter("email not like 'x%'", &[("email", "ab")]));
    assert!(filter("is_test = true", &[("is_test", "t")]));
    assert!(filter("is_test = 't'", &[("is_test", "true")]));
    assert!(filter("amount > 1000", &[("amount", "1000.01")]));
    assert!(filter("amount = 12.5", &[("amount", "12.50")]));
    assert!(filter("x % 2 = 1 and -x < 0", &[("x", "7")]));
    assert!(filter("\"Mixed Case\" = 'v'", &[("Mixed Case", "v")]));
    assert!(
        filter("email > 'B' and email < 'b'", &[("email", "Z")]),
        "text compares by code point"
    );
    assert!(
        filter("x = 1 or x = 2 and false", &[("x", "1")]),
        "AND binds tighter than OR"
    );
}

#[test]
fn arithmetic() {
    assert_eq!(
        ok("10 / 4", &[]),
        s("2"),
        "integer division truncates like PostgreSQL"
    );
    assert_eq!(ok("-7 / 2", &[]), s("-3"));
    assert_eq!(ok("10.0 / 4", &[]), s("2.5000000000000000"));
    assert_eq!(ok("1 / 3.0", &[]), s("0.33333333333333333333"));
    assert_eq!(ok("2 / 3.0", &[]), s("0.66666666666666666667"));
    assert_eq!(ok("1000000 / 3.0", &[]), s("333333.333333333333"));
    assert_eq!(ok("amount * 2", &[("amount", "12.50")]), s("25.00"));
    assert_eq!(ok("amount + 1", &[("amount", "12.50")]), s("13.50"));
    assert_eq!(ok("amount - 0.505", &[("amount", "12.50")]), s("11.995"));
    assert_eq!(ok("amount * 1.5", &[("amount", "12.50")]), s("18.750"));
    assert_eq!(ok("amount % 5", &[("amount", "12.50")]), s("2.50"));
    assert_eq!(ok("7 % 3", &[]), s("1"));
    assert_eq!(ok("1 + 2 * 3 - -1", &[]), s("8"));
    assert_eq!(ok("(1 + 2) * 3", &[]), s("9"));
    assert_eq!(ok("abs(x)", &[("x", "-5")]), s("5"));
    assert_eq!(ok("abs(amount)", &[("amount", "-5.10")]), s("5.10"));
    assert_eq!(ok("round(2.5)", &[]), s("3"));
    assert_eq!(ok("round(-2.5)", &[]), s("-3"));
    assert_eq!(ok("round(1.2345, 2)", &[]), s("1.23"));
    assert_eq!(ok("round(1.5, 3)", &[]), s("1.500"));
    assert_eq!(ok("round(1250.5, -2)", &[]), s("1300"));
    assert_eq!(ok("round(amount, 1)", &[("amount", "12.55")]), s("12.6"));
    assert_eq!(ok("round(x)", &[("x", "4")]), s("4"));
    assert_eq!(ok("ratio * 2", &[("ratio", "0.1")]), s("0.2"));
    assert_eq!(ok("ratio + 1", &[("ratio", "NaN")]), s("NaN"));
    assert_eq!(
        ok("ratio", &[("ratio", "1e+300")]),
        Some(format!("1{}", "0".repeat(300)))
    );
    assert_eq!(ok("12345678901234567890", &[]), s("12345678901234567890"));
    assert_eq!(compile("12345678901234567890").result_type(), Type::Numeric);
    assert_eq!(compile("x + 1").result_type(), Type::Int);
    assert_eq!(compile("x + 1.0").result_type(), Type::Numeric);
    assert_eq!(compile("x + amount").result_type(), Type::Numeric);
}

#[test]
fn output_formats() {
    assert_eq!(ok("is_test", &[("is_test", "t")]), s("true"));
    assert_eq!(ok("x > 1", &[("x", "0")]), s("false"));
    assert_eq!(
        ok(
            "created_at",
            &[("created_at", "2024-03-01 12:34:56.789+00")]
        ),
        s("2024-03-01 12:34:56.789+00")
    );
    assert_eq!(
        ok("deleted_at", &[("deleted_at", "2024-03-01 12:34:56")]),
        s("2024-03-01 12:34:56")
    );
    assert_eq!(
        ok("birth", &[("birth", "0044-03-15 BC")]),
        s("0044-03-15 BC")
    );
    assert_eq!(ok("birth", &[("birth", "-infinity")]), s("-infinity"));
    assert_eq!(
        ok(
            "created_at",
            &[("created_at", "1900-01-01 00:00:00+00:53:28")]
        ),
        s("1900-01-01 00:00:00+00:53:28")
    );
    assert_eq!(
        ok("id", &[("id", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]),
        s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(ok("tags", &[("tags", "{a,b}")]), s("{a,b}"));
}

#[test]
fn null_semantics() {
    assert_eq!(ok("upper(nickname)", &[]), None);
    assert_eq!(ok("length(nickname)", &[]), None);
    assert_eq!(ok("substr(email, x)", &[("email", "abc")]), None);
    assert_eq!(ok("x + 1", &[]), None);
    assert_eq!(ok("-x", &[]), None);
    assert_eq!(ok("x = 1", &[]), None);
    assert_eq!(ok("x = null", &[("x", "1")]), None);
    assert_eq!(ok("x = 1 or true", &[]), s("true"));
    assert_eq!(ok("x = 1 and false", &[]), s("false"));
    assert_eq!(ok("x = 1 and true", &[]), None);
    assert_eq!(ok("x = 1 or false", &[]), None);
    assert_eq!(ok("not (x = 1)", &[]), None);
    assert_eq!(ok("x in (1, null)", &[("x", "2")]), None);
    assert_eq!(ok("x in (1, null)", &[("x", "1")]), s("true"));
    assert_eq!(ok("x not in (1, null)", &[("x", "2")]), None);
    assert_eq!(ok("x in (1, 2)", &[]), None);
    assert_eq!(ok("x between 1 and null", &[("x", "0")]), s("false"));
    assert_eq!(ok("x between 1 and null", &[("x", "5")]), None);
    assert_eq!(ok("nickname is null", &[]), s("true"));
    assert_eq!(ok("nickname is not null", &[]), s("false"));
    assert_eq!(ok("concat(nickname, nickname)", &[]), s(""));
    assert_eq!(ok("nickname || 'a'", &[]), None);
    assert_eq!(ok("coalesce(nickname, null)", &[]), None);
    assert_eq!(ok("null", &[]), None);
    assert_eq!(compile("null").result_type(), Type::Null);
    assert_eq!(ok("if(null, 1, 2)", &[]), s("2"));
    assert_eq!(ok("json_get(payload, '$.a') is null", &[]), s("true"));
    assert_eq!(ok("date_part('year', created_at)", &[]), None);
    assert_eq!(ok("regex_replace(phone, 'a', 'b')", &[]), None);
    assert_eq!(ok("nullif(nickname, 'a')", &[]), None);
    assert!(!filter("x > 1", &[]));
}

#[test]
fn names_are_case_insensitive_and_identifiers_quoted() {
    let e = err("LOWER(Email)");
    assert!(e.message.contains("did you mean \"email\""), "{e}");
    assert_eq!(ok("LOWER(email)", &[("email", "A")]), s("a"));
    assert_eq!(
        ok("CASE WHEN email IS NULL THEN 'n' ELSE 'y' END", &[]),
        s("n")
    );
    assert_eq!(
        ok("lower(\"Mixed Case\")", &[("Mixed Case", "AbC")]),
        s("abc")
    );
    assert_eq!(ok("Coalesce(NULL, 'a') -- trailing comment", &[]), s("a"));
    assert_eq!(ok("TRUE and False", &[]), s("false"));
}

#[test]
fn columns_used_and_types() {
    let c = compile("concat(first_name, ' ', last_name, first_name)");
    assert_eq!(c.columns_used(), &[1, 2]);
    assert_eq!(c.result_type(), Type::Text);
    assert_eq!(compile("'a'").columns_used(), &[] as &[usize]);
    assert_eq!(compile("length(email)").result_type(), Type::Int);
    assert_eq!(compile("created_at").result_type(), Type::Timestamp);
    assert_eq!(compile("payload").result_type(), Type::Json);
    assert_eq!(compile("birth").result_type(), Type::Date);
    assert_eq!(compile("x > 1").result_type(), Type::Bool);
    assert_eq!(
        Type::from_sql_type("timestamp(3) with time zone"),
        Type::Timestamp
    );
    assert_eq!(Type::from_sql_type("numeric(10,2)"), Type::Numeric);
    assert_eq!(Type::from_sql_type("integer[]"), Type::Text);
    assert_eq!(Type::from_sql_type("character varying(40)"), Type::Text);
    assert_eq!(Type::from_sql_type("real"), Type::Numeric);
    assert_eq!(Type::from_sql_type("interval"), Type::Text);
}

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

// ---------------------------------------------------------------- evaluation errors

#[test]
fn eval_errors() {
    let e = run("cast(code as integer)", &[("code", "abc")]).unwrap_err();
    assert_eq!(
        e,
        EvalError::InvalidCast {
            at: 5,
            ty: "integer",
            value: "abc".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "invalid input for type integer: \"abc\" (expression column 6)"
    );
    assert!(matches!(
        run("code::integer", &[("code", "12.5")]),
        Err(EvalError::InvalidCast { .. })
    ));
    assert!(matches!(
        run("code::integer", &[("code", "99999999999")]),
        Err(EvalError::OutOfRange {
            what: "integer",
            ..
        })
    ));
    assert!(matches!(
        run("code::numeric", &[("code", "1.2.3")]),
        Err(EvalError::InvalidCast { ty: "numeric", .. })
    ));
    assert!(matches!(
        run("flag::boolean", &[("flag", "maybe")]),
        Err(EvalError::InvalidCast { ty: "boolean", .. })
    ));
    assert!(matches!(
        run("d::date", &[("d", "2024-02-30")]),
        Err(EvalError::InvalidCast { ty: "date", .. })
    ));
    assert!(matches!(
        run("d::timestamp", &[("d", "yesterday")]),
        Err(EvalError::InvalidCast { .. })
    ));
    assert!(matches!(
        run("code::json", &[("code", "{bad")]),
        Err(EvalError::InvalidCast { ty: "json", .. })
    ));
    assert!(matches!(
        run("code::uuid", &[("code", "xyz")]),
        Err(EvalError::InvalidCast { ty: "uuid", .. })
    ));
    assert!(matches!(
        run("amount::numeric(3,1)", &[("amount", "123.45")]),
        Err(EvalError::OutOfRange { .. })
    ));
    assert_eq!(
        run("x / 0", &[("x", "5")]),
        Err(EvalError::DivisionByZero { at: 2 })
    );
    assert_eq!(
        run("amount / (x - 1)", &[("amount", "1.00"), ("x", "1")]),
        Err(EvalError::DivisionByZero { at: 7 })
    );
    assert_eq!(
        run("x % 0", &[("x", "5")]),
        Err(EvalError::DivisionByZero { at: 2 })
    );
    assert_eq!(
        run("ratio / 0", &[("ratio", "1e+300")]),
        Err(EvalError::DivisionByZero { at: 6 })
    );
    assert_eq!(
        run("qty * qty", &[("qty", "9223372036854775807")]),
        Err(EvalError::OutOfRange {
            at: 4,
            what: "integer"
        })
    );
    assert_eq!(
        run("-qty - 2", &[("qty", "9223372036854775807")]),
        Err(EvalError::OutOfRange {
            at: 5,
            what: "integer"
        })
    );
    let big = "99999999999999999999999999999999999.99";
    assert!(matches!(
        run("amount * amount", &[("amount", big)]),
        Err(EvalError::OutOfRange {
            what: "numeric",
            ..
        })
    ));
    let e = run("x + 1", &[("x", "abc")]).unwrap_err();
    assert_eq!(
        e,
        EvalError::InvalidColumnValue {
            column: "x".into(),
            ty: "integer",
            value: "abc".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "invalid integer value \"abc\" in column \"x\""
    );
    assert!(matches!(
        run("created_at", &[("created_at", "soon")]),
        Err(EvalError::InvalidColumnValue { .. })
    ));
    let e = run("json_get(payload, '$.a')", &[("payload", "{\"a\" 1}")]).unwrap_err();
    assert!(
        matches!(&e, EvalError::InvalidJson { at: 0, detail } if detail.contains("in column \"payload\"")),
        "{e}"
    );
    assert_eq!(
        run("substr(email, 1, -1)", &[("email", "a")]),
        Err(EvalError::InvalidArgument {
            at: 0,
            message: "negative substring length not allowed".into()
        })
    );
    assert!(matches!(
        run("split_part(email, ',', 0)", &[("email", "a")]),
        Err(EvalError::InvalidArgument { .. })
    ));
    let c = compile("last_name");
    let e = c.eval(&[Some("a")]).unwrap_err();
    assert_eq!(
        e,
        EvalError::MissingColumn {
            index: 2,
            column: "last_name".into(),
            len: 1
        }
    );
    assert_eq!(
        compile("x").eval_filter(&row(&[("x", "1")])),
        Err(EvalError::NotBoolean(Type::Int))
    );
}

#[test]
fn compiled_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Compiled>();
    assert_send_sync::<CompileError>();
    assert_send_sync::<EvalError>();
}

/// Rough throughput check: `cargo test --release -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let exprs = [
        "lower(trim(email))",
        "concat(first_name, ' ', last_name)",
        "regex_replace(phone, '[^0-9]', '')",
        "json_get(payload, '$.address.city')",
        "if(amount > 1000, 'large', 'small')",
        "date_part('year', created_at)",
    ];
    let compiled: Vec<Compiled> = exprs.iter().map(|e| compile(e)).collect();
    let r = row(&[
        ("email", "  Foo@Example.COM "),
        ("first_name", "Ada"),
        ("last_name", "Lovelace"),
        ("phone", "+1 (555) 123-4567"),
        ("payload", PAYLOAD),
        ("amount", "1234.50"),
        ("created_at", "2024-03-01 12:34:56.789+00"),
    ]);
    let n = 200_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        for c in &compiled {
            std::hint::black_box(c.eval(&r).unwrap());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} rows/s with {} expressions per row",
        n as f64 / secs,
        exprs.len()
    );
}

// ---------------------------------------------------------------- properties

const EXPRS: &[&str] = &[
    "lower(trim(email)) || upper(ltrim(rtrim(first_name, 'x')))",
    "concat(first_name, ' ', last_name, x, amount, birth, created_at, is_test, payload)",
    "coalesce(nickname, first_name, 'unknown')",
    "regex_replace(phone, '[^0-9]', '')",
    "regex_replace(phone, '(.)(.)?', status)",
    "regex_capture(code, '^([A-Z]+)-', 1)",
    "json_get(payload, '$.address.city') || json_get(code, '$.items[0].sku')",
    "json_get(payload, '$[\"a\"][3]')",
    "date_part('epoch', created_at) + date_part('second', deleted_at) + date_part('doy', birth)",
    "date_part('year', created_at) + date_part('dow', birth)",
    "if(amount > 1000, 'large', 'small')",
    "case when status = 'a' then 'active' when status = 'c' then 'closed' else 'other' end",
    "case kind when 'a' then amount when 'b' then x end",
    "amount::numeric(6,2) + code::numeric - ratio / 3",
    "cast(code as integer) + x * qty / (x - 1) % 7",
    "flag::boolean and is_test or not is_test",
    "d::date < created_at and d::timestamp > deleted_at and d::timestamptz = birth",
    "status <> 'draft' and deleted_at is null",
    "kind in ('a', 'b', null) or kind not in (first_name, last_name)",
    "x between -1 and qty or amount not between ratio and 5",
    "email like '%@_x%' or email ilike 'A\\%%'",
    "length(email) + length(code)",
    "substr(email, x, qty) || substr(email, x)",
    "replace(email, first_name, last_name) || split_part(email, code, x)",
    "nullif(x, qty) + nullif(amount, 0)",
    "abs(x) + abs(amount) + round(amount, x) + round(ratio)",
    "-x + -amount",
    "code::uuid || code::varchar(2) || code::json::text || d::timestamp::date",
    "birth::text || created_at::text || ratio::double precision",
    "x::boolean or qty::smallint = 1 or amount::integer > 1 or is_test::int4 = 0",
    "\"Mixed Case\" || id || tags",
];

const TOKENS: &[&str] = &[
    "(",
    ")",
    ",",
    "'a'",
    "'$.a[0]'",
    "'year'",
    "'[a-z]+'",
    "'2024-01-01'",
    "1",
    "0",
    "2.5",
    "-",
    "+",
    "*",
    "/",
    "%",
    "||",
    "::",
    "=",
    "<>",
    "<",
    ">=",
    "and",
    "or",
    "not",
    "is",
    "null",
    "in",
    "between",
    "like",
    "case",
    "when",
    "then",
    "else",
    "end",
    "cast",
    "as",
    "integer",
    "numeric",
    "text",
    "date",
    "timestamp",
    "boolean",
    "json",
    "email",
    "amount",
    "x",
    "qty",
    "created_at",
    "payload",
    "is_test",
    "birth",
    "ratio",
    "lower(",
    "coalesce(",
    "json_get(",
    "date_part(",
    "substr(",
    "regex_capture(",
    "regex_replace(",
    "round(",
    "if(",
    "split_part(",
    "nullif(",
    "abs(",
    "concat(",
    "true",
    "\"x\"",
];

fn value() -> impl Strategy<Value = Option<String>> {
    let plausible = prop::sample::select(vec![
        "t",
        "f",
        "0",
        "-1",
        "12.50",
        "9223372036854775807",
        "-9223372036854775808",
        "1e+300",
        "NaN",
        "Infinity",
        "2024-03-01",
        "2024-03-01 12:34:56.789+00",
        "0044-03-15 BC",
        "infinity",
        "24:00",
        "2024-02-29 24:00:00",
        PAYLOAD,
        "[1, [2, {\"a\": null}]]",
        "{\"a\": \"\\ud800\"}",
        "{",
        "\"",
        "",
        " ",
        "é",
        "ABC-1",
        "99999999999999999999999999999999999999.9",
    ]);
    prop::option::of(prop_oneof![
        plausible.prop_map(str::to_owned),
        "\\PC{0,24}",
        "[0-9.eE+-]{0,12}"
    ])
}

fn rows() -> impl Strategy<Value = Vec<Option<String>>> {
    prop::collection::vec(value(), SCHEMA.len())
}

/// Random, mostly well-formed expressions over the test schema.
fn expr_text() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "email",
        "x",
        "qty",
        "amount",
        "ratio",
        "created_at",
        "deleted_at",
        "birth",
        "is_test",
        "payload",
        "code",
        "null",
        "1",
        "-2",
        "0",
        "2.5",
        "'a'",
        "'2024-01-01'",
        "'t'",
        "true",
        "'{\"a\": [1]}'",
    ])
    .prop_map(str::to_owned);
    let sel = |v: &'static [&'static str]| prop::sample::select(v);
    leaf.prop_recursive(5, 64, 4, move |e| {
        let ops = sel(&[
            "+", "-", "*", "/", "%", "||", "=", "<>", "<", ">=", "and", "or",
        ]);
        let unary = sel(&[
            "lower", "upper", "length", "abs", "round", "trim", "ltrim", "not ", "-", "json_get",
        ]);
        let types = sel(&[
            "text",
            "integer",
            "smallint",
            "numeric",
            "numeric(5,2)",
            "double precision",
            "boolean",
            "date",
            "timestamp",
            "timestamptz",
            "json",
            "varchar(2)",
            "uuid",
        ]);
        let funcs = sel(&[
            "coalesce",
            "concat",
            "substr",
            "split_part",
            "replace",
            "nullif",
            "if",
            "round",
            "trim",
            "regex_replace",
        ]);
        prop_oneof![
            (e.clone(), ops, e.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (unary, e.clone()).prop_map(|(f, a)| match f {
                "json_get" => format!("json_get({a}, '$.a[0]')"),
                "not " | "-" => format!("{f}({a})"),
                f => format!("{f}({a})"),
            }),
            (e.clone(), types).prop_map(|(a, t)| format!("{a}::{t}")),
            (funcs, prop::collection::vec(e.clone(), 1..4))
                .prop_map(|(f, v)| format!("{f}({})", v.join(", "))),
            (e.clone(), e.clone(), e.clone())
                .prop_map(|(a, b, c)| format!("case when {a} then {b} else {c} end")),
            (e.clone(), e.clone(), e.clone())
                .prop_map(|(a, b, c)| format!("case {a} when {b} then {c} end")),
            (e.clone(), e.clone(), e.clone()).prop_map(|(a, b, c)| format!("({a} in ({b}, {c}))")),
            (e.clone(), e.clone(), e.clone())
                .prop_map(|(a, b, c)| format!("({a} not between {b} and {c})")),
            e.clone().prop_map(|a| format!("({a} is not null)")),
            e.clone().prop_map(|a| format!("({a} ilike '%a_')")),
            e.clone().prop_map(|a| format!("date_part('epoch', {a})")),
            e.clone().prop_map(|a| format!("date_part('dow', {a})")),
            e.clone()
                .prop_map(|a| format!("regex_capture({a}, '(.)(x)?', 2)")),
        ]
    })
}

proptest! {
    #[test]
    fn generated_expressions_compile_and_evaluate_without_panics(src in expr_text(), vals in rows()) {
        if let Ok(c) = Compiled::compile(&src, &cols()) {
            let r: Vec<Option<&str>> = vals.iter().map(Option::as_deref).collect();
            let _ = c.eval(&r);
            let _ = c.eval_filter(&r);
            let _ = c.eval(&row(&[("x", "3"), ("amount", "2.50"), ("email", "a"), ("code", "1")]));
        }
    }

    #[test]
    fn compiling_arbitrary_text_never_panics(src in "\\PC{0,80}") {
        let _ = Compiled::compile(&src, &cols());
        let _ = Compiled::compile_filter(&src, &cols());
    }

    #[test]
    fn token_soup_compiles_and_evaluates_without_panics(
        toks in prop::collection::vec(prop::sample::select(TOKENS), 1..24),
        vals in rows(),
    ) {
        let src = toks.join(" ");
        if let Ok(c) = Compiled::compile(&src, &cols()) {
            let r: Vec<Option<&str>> = vals.iter().map(Option::as_deref).collect();
            let _ = c.eval(&r);
            let _ = c.eval_filter(&r);
            let _ = c.eval(&r[..3]);
        }
    }

    #[test]
    fn evaluating_arbitrary_rows_never_panics(vals in rows(), cut in 0usize..30) {
        let r: Vec<Option<&str>> = vals.iter().map(Option::as_deref).collect();
        for src in EXPRS {
            let c = compile(src);
            let _ = c.eval(&r);
            let _ = c.eval_filter(&r);
            let _ = c.eval(&r[..cut.min(r.len())]);
        }
    }

    #[test]
    fn numeric_text_round_trips(m in any::<i64>(), scale in 0u32..12) {
        let n = Num::Dec(i128::from(m), scale).to_string();
        let c = compile("amount");
        let out = c.eval(&row(&[("amount", &n)])).unwrap();
        prop_assert_eq!(out.as_deref(), Some(n.as_str()));
    }
}

/// The nesting limits keep the worst case well inside a 2 MiB thread stack
/// (Rust's and tokio's default), even in debug builds.
#[test]
fn deepest_expressions_fit_in_a_small_stack() {
    let worst = move || {
        let mut srcs = vec![
            format!("x = 1{}", " or x = 1".repeat(2000)),
            format!("x{}", " || x".repeat(2000)),
        ];
        for n in 0..80 {
            srcs.push(format!("{}x{}", "(".repeat(n), ")".repeat(n)));
            srcs.push(format!("{}x{}", "abs(".repeat(n), ")".repeat(n)));
            srcs.push(format!("{}x{}", "coalesce(".repeat(n), ", 1)".repeat(n)));
            srcs.push(format!("x{}", " + x".repeat(n)));
            srcs.push(format!("{}x", "- ".repeat(n)));
            srcs.push(format!("{}x > 1", "not ".repeat(n)));
            srcs.push(format!("x{}", "::text::integer".repeat(n)));
        }
        let mut compiled = 0;
        for src in &srcs {
            if let Ok(c) = Compiled::compile(src, &cols()) {
                compiled += 1;
                let _ = c.eval(&row(&[("x", "1")]));
            }
        }
        compiled
    };
    let compiled = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(worst)
        .unwrap()
        .join()
        .unwrap();
    assert!(compiled > 200, "{compiled}");
}
