//! Expression tests: the examples the expression language was specified with.

use super::*;

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
