//! Expression tests: properties over randomized inputs (proptest prints its seed on failure).

use super::*;

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
