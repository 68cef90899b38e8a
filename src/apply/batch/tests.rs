use super::*;
use crate::change::SourceKey;
use crate::transform::plan::{Expr, TargetColumn};

fn output(id: usize) -> Arc<OutputPlan> {
    let col = |n: &str| TargetColumn {
        name: n.into(),
        sql_type: "text".into(),
        expr: Expr::Column {
            name: n.into(),
            via: None,
        },
    };
    Arc::new(OutputPlan {
        id,
        source: "public.s".into(),
        target_schema: "public".into(),
        target_name: format!("t{id}"),
        columns: vec![col("id"), col("a"), col("big")],
        key: vec![0],
        kind: crate::transform::plan::OutputKind::Row,
        present: vec![],
        linked: true,
    })
}
fn g(k: &str, v: u64) -> Guard {
    Guard {
        source_rel: Arc::from("public.s"),
        key: SourceKey(vec![Some(k.into())]),
        version: Lsn(v),
        change: v,
    }
}
fn t(s: &str) -> Value {
    Value::Text(s.into())
}
fn up(o: &Arc<OutputPlan>, k: &str, v: u64, a: &str, big: Value) -> TargetOp {
    TargetOp::Upsert {
        output: o.clone(),
        guard: g(k, v),
        row: vec![t(k), t(a), big],
        from: None,
    }
}

#[test]
fn later_upsert_folds_into_earlier_and_keeps_unchanged_values() {
    let o = output(0);
    let gs = groups(vec![
        up(&o, "1", 10, "x", t("LARGE")),
        up(&o, "2", 10, "y", t("B")),
        up(&o, "1", 20, "z", Value::Unchanged),
    ]);
    assert_eq!(gs.len(), 1);
    let Group::Upsert { rows, .. } = &gs[0] else {
        panic!("{gs:?}")
    };
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0.version, Lsn(20));
    assert_eq!(rows[0].1, vec![t("1"), t("z"), t("LARGE")]);
}

#[test]
fn unchanged_columns_without_earlier_value_become_an_update_of_present_columns() {
    let o = output(0);
    let gs = groups(vec![
        up(&o, "1", 10, "x", Value::Unchanged),
        up(&o, "2", 10, "y", t("B")),
    ]);
    assert_eq!(gs.len(), 2);
    assert!(matches!(&gs[0], Group::Update { present, .. } if *present == vec![0, 1]));
    assert!(matches!(&gs[1], Group::Upsert { rows, .. } if rows.len() == 1));
}

#[test]
fn runs_keep_stream_order_across_kinds_and_tables() {
    let (a, b) = (output(0), output(1));
    let del = |o: &Arc<OutputPlan>, k: &str, v| TargetOp::Delete {
        output: o.clone(),
        guard: g(k, v),
        key: vec![t(k)],
    };
    let gs = groups(vec![
        up(&a, "1", 1, "x", t("b")),
        up(&b, "1", 1, "x", t("b")),
        del(&a, "1", 2),
        up(&a, "1", 3, "again", t("b")),
    ]);
    let kinds: Vec<&str> = gs
        .iter()
        .map(|g| match g {
            Group::Upsert { output, .. } if output.id == 0 => "upA",
            Group::Upsert { .. } => "upB",
            Group::Delete { .. } => "delA",
            _ => "?",
        })
        .collect();
    assert_eq!(kinds, ["upA", "upB", "delA", "upA"]);
}

fn unlinked(id: usize, rel: &str) -> Arc<OutputPlan> {
    let mut o = (*output(id)).clone();
    o.linked = false;
    o.source = rel.into();
    Arc::new(o)
}
fn op(o: &Arc<OutputPlan>, k: &str, v: u64, delete: bool) -> TargetOp {
    let guard = Guard {
        source_rel: Arc::from(o.source.as_str()),
        ..g(k, v)
    };
    if delete {
        TargetOp::Delete {
            output: o.clone(),
            guard,
            key: vec![t(k)],
        }
    } else {
        TargetOp::Upsert {
            output: o.clone(),
            guard,
            row: vec![t(k), t(&format!("v{v}")), t("b")],
            from: None,
        }
    }
}
fn names(gs: &[Group]) -> Vec<String> {
    gs.iter()
        .map(|g| match g {
            Group::Upsert { output, rows } => format!("up{}x{}", output.id, rows.len()),
            Group::Delete { output, rows } => format!("del{}x{}", output.id, rows.len()),
            _ => "?".into(),
        })
        .collect()
}

#[test]
fn unlinked_tables_across_transactions_make_one_statement_per_table() {
    // pgbench: every transaction updates an account, a teller and the one branch.
    let (acc, tel, br) = (
        unlinked(0, "public.accounts"),
        unlinked(1, "public.tellers"),
        unlinked(2, "public.branches"),
    );
    let mut ops = Vec::new();
    for v in 1..=50u64 {
        ops.push(op(&acc, &v.to_string(), v, false));
        ops.push(op(&tel, &(v % 5).to_string(), v, false));
        ops.push(op(&br, "1", v, false));
    }
    let gs = groups(ops);
    assert_eq!(names(&gs), ["up0x50", "up1x5", "up2x1"]);
    let Group::Upsert { rows, .. } = &gs[2] else {
        panic!()
    };
    assert_eq!(rows[0].0.version, Lsn(50), "the last write of a row wins");
    assert_eq!(rows[0].1[1], t("v50"));
}

#[test]
fn a_write_after_a_removal_of_the_same_row_is_never_moved_before_it() {
    let (a, b) = (unlinked(0, "public.a"), unlinked(1, "public.b"));
    let gs = groups(vec![
        op(&a, "1", 1, false),
        op(&b, "7", 1, false),
        op(&a, "1", 2, true),
        op(&b, "8", 3, false),
        op(&a, "1", 3, false),
    ]);
    // The delete of a/1 stays after its first write and before its re-insert.
    assert_eq!(names(&gs), ["up0x1", "up1x2", "del0x1", "up0x1"]);
}

#[test]
fn linked_outputs_of_different_source_tables_keep_stream_order() {
    // Target tables with a foreign key between them, fed by two source tables.
    let mut c = (*unlinked(0, "public.customers")).clone();
    c.linked = true;
    let mut o = (*unlinked(1, "public.orders")).clone();
    o.linked = true;
    let (c, o) = (Arc::new(c), Arc::new(o));
    let gs = groups(vec![
        op(&o, "1", 1, true),
        op(&c, "9", 1, true),
        op(&c, "9", 2, false),
        op(&o, "2", 2, false),
    ]);
    assert_eq!(names(&gs), ["del1x1", "del0x1", "up0x1", "up1x1"]);
}
