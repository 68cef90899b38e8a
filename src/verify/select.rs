//! Which tables a verification covers, and how each is read and compared: the per-table
//! reader (columns, COPY query), the transformer path and the hash comparison when the plan
//! allows it.

use super::*;

pub(super) fn selected(filter: &[String], rel: &str, tp: &TablePlan) -> bool {
    let hit = |q: &str, name: &str| q == name || name.split_once('.').is_some_and(|(_, n)| n == q);
    filter.is_empty()
        || filter
            .iter()
            .any(|f| hit(f, rel) || tp.outputs.iter().any(|o| hit(f, &o.target())))
}

pub(crate) async fn tables(ctx: &Ctx, filter: &[String]) -> Result<Vec<Table>, VerifyError> {
    let catalog = crate::transform::catalog::load(&ctx.source)
        .await
        .map_err(q("reading the source schema"))?;
    let mut rels: Vec<&String> = ctx.plan.tables.keys().collect();
    rels.sort();
    for f in filter {
        if !rels
            .iter()
            .any(|r| selected(std::slice::from_ref(f), r, &ctx.plan.tables[*r]))
        {
            return Err(VerifyError::UnknownTable {
                name: f.clone(),
                known: rels
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let mut out = Vec::new();
    for (i, rel) in rels.into_iter().enumerate() {
        let tp = &ctx.plan.tables[rel];
        if !selected(filter, rel, tp) {
            continue;
        }
        let info = catalog.get(rel);
        let types = |c: &str| info.and_then(|t| t.column(c)).map(|c| c.sql_type.clone());
        let all: Vec<String> = info
            .map(|t| t.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let ts = TableSql::new(tp, &types, i, Some(&all)).ok_or_else(|| VerifyError::Table {
            table: rel.clone(),
            column: tp.source_key.join(", "),
        })?;
        let rj = RowsJob::new(tp.clone(), ctx.plan.clone(), &ts.columns, ts.key_len, i)
            .ok_or_else(|| VerifyError::Table {
                table: rel.clone(),
                column: tp.source_key.join(", "),
            })?;
        let mut hash = match tp.outputs.as_slice() {
            [o] if tp.sql_only() && ctx.config.verify.hash => sql::hashable(&ts, o),
            _ => None,
        };
        let mut outs: Vec<Out> = tp
            .outputs
            .iter()
            .map(|o| {
                let derive = sql::derivation(&ts, o);
                let mut notes = Vec::new();
                match (&o.kind, &derive) {
                    (OutputKind::Merge, _) => notes.push(
                        "merged columns are compared; rows without a source row are the owning mapping's check".to_string(),
                    ),
                    (_, None) => notes.push(
                        "target rows without a source row are not looked for: no target column holds the source key unchanged".to_string(),
                    ),
                    _ => {}
                }
                Out {
                    o: o.clone(),
                    derive,
                    still: 0,
                    unrepairable: 0,
                    report: TableReport {
                        source: rel.clone(),
                        target: o.target(),
                        kind: match o.kind {
                            OutputKind::Row => "row",
                            OutputKind::Merge => "merge",
                            OutputKind::Split(_) => "split",
                        },
                        notes,
                        ..Default::default()
                    },
                }
            })
            .collect();
        // The hash path computes target values on the source: the target's types must exist
        // there. Try it once outside any snapshot.
        if let Some(h) = &hash {
            let probe = format!(
                "SELECT ROW({})::text FROM {} LIMIT 0",
                h.source_exprs.join(", "),
                ts.source_quoted
            );
            if let Err(e) = ctx.source.simple_query(&probe).await {
                outs[0].report.notes.push(format!(
                    "compared row by row: the source cannot compute the target's values for hashing ({})",
                    PgError::from(e)
                ));
                hash = None;
            }
        }
        out.push(Table {
            rel: rel.clone(),
            state: ctx.state.clone(),
            ts,
            rj,
            hash,
            outs,
            recheck: BTreeMap::new(),
            overflow: 0,
            confirmed: BTreeMap::new(),
            dead_letters: 0,
            after_repair: false,
            count_listed: false,
            round: 0,
        });
    }
    Ok(out)
}
