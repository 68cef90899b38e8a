//! Expression tests: errors while evaluating a row.

use super::*;

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
