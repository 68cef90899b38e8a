//! Compiling mappings with no database: both catalogs and the target's answers about its types
//! are data (`target_types::Answers`), so the compiler's rules have unit tests.

use std::collections::HashMap;

use super::catalog::{ColumnInfo, Env, TableInfo};
use super::custom::Registry;
use super::mapping::TableMapping;
use super::plan::OutputKind;
use super::target_types::Answers;
use super::{compile, Plan, Problem};

/// The `[[tables]]` of a config text, read as the configuration reads them.
#[derive(serde::Deserialize)]
struct Mappings {
    #[serde(default)]
    tables: Vec<TableMapping>,
}

fn table(qualified: &str, cols: &[(&str, &str)], pk: &[&str]) -> TableInfo {
    let (schema, name) = qualified.split_once('.').expect("schema.table");
    TableInfo {
        schema: schema.into(),
        name: name.into(),
        columns: cols
            .iter()
            .map(|(n, t)| ColumnInfo {
                name: n.to_string(),
                sql_type: t.to_string(),
                not_null: pk.contains(n),
                has_default: false,
                generated: false,
                identity_always: false,
                type_oid: 0,
                typmod: -1,
            })
            .collect(),
        primary_key: pk.iter().map(|c| c.to_string()).collect(),
        replica_identity: 'd',
        identity_columns: pk.iter().map(|c| c.to_string()).collect(),
        unique_keys: vec![],
        unlogged: false,
        oid: 1,
    }
}

fn catalog(tables: Vec<TableInfo>) -> HashMap<String, TableInfo> {
    tables.into_iter().map(|t| (t.qualified(), t)).collect()
}

async fn compile_toml(
    mapping: &str,
    source: Vec<TableInfo>,
    target: Vec<TableInfo>,
    answers: &Answers,
) -> Result<Plan, Vec<Problem>> {
    let mappings: Mappings = config::Config::builder()
        .add_source(config::File::from_str(mapping, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("test mapping");
    let registry = Registry::default();
    let published: Vec<String> = source.iter().map(|t| t.qualified()).collect();
    let (source, target) = (catalog(source), catalog(target));
    let env = Env {
        published: &published,
        source: &source,
        target: &target,
        target_types: answers,
        state_schema: "remodel",
        registry: &registry,
    };
    compile(&mappings.tables, &env).await
}

fn accounts() -> TableInfo {
    table(
        "public.accounts",
        &[("id", "integer"), ("balance", "bigint"), ("note", "text")],
        &["id"],
    )
}

#[tokio::test]
async fn an_identity_mapping_compiles_to_one_row_output_keyed_like_the_source() {
    let plan = compile_toml("", vec![accounts()], vec![accounts()], &Answers::postgres())
        .await
        .expect("compiles");
    let t = &plan.tables["public.accounts"];
    assert_eq!(t.source_key, ["id"]);
    assert_eq!(t.outputs.len(), 1);
    let o = &t.outputs[0];
    assert!(matches!(o.kind, OutputKind::Row));
    assert_eq!(o.target(), "public.accounts");
    let cols: Vec<&str> = o.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cols, ["id", "balance", "note"]);
}

#[tokio::test]
async fn a_kept_column_the_target_lacks_is_a_problem_naming_table_column_and_fix() {
    let target = table(
        "public.accounts",
        &[("id", "integer"), ("balance", "bigint")],
        &["id"],
    );
    let problems = compile_toml("", vec![accounts()], vec![target], &Answers::postgres())
        .await
        .expect_err("the target has no column note");
    let p = problems
        .iter()
        .find(|p| p.message.contains("note"))
        .unwrap_or_else(|| panic!("no problem names the column: {problems:?}"));
    assert_eq!(p.table, "public.accounts");
    assert!(!p.fix.is_empty(), "{p:?}");
}

#[tokio::test]
async fn dropping_and_renaming_columns_compile_without_asking_for_them() {
    let target = table(
        "public.accounts",
        &[("id", "integer"), ("amount", "bigint")],
        &["id"],
    );
    let plan = compile_toml(
        "[[tables]]\nsource = \"public.accounts\"\n[tables.columns]\nnote = \"drop\"\nbalance = { rename = \"amount\" }\n",
        vec![accounts()],
        vec![target],
        &Answers::postgres(),
    )
    .await
    .expect("compiles");
    let cols: Vec<&str> = plan.tables["public.accounts"].outputs[0]
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["id", "amount"]);
}

#[tokio::test]
async fn a_computed_column_whose_type_does_not_convert_is_refused() {
    let target = table(
        "public.accounts",
        &[
            ("id", "integer"),
            ("balance", "bigint"),
            ("note", "text"),
            ("rich", "uuid"),
        ],
        &["id"],
    );
    let mapping =
        "[[tables]]\nsource = \"public.accounts\"\n[tables.computed]\nrich = \"balance > 100\"\n";
    let problems = compile_toml(
        mapping,
        vec![accounts()],
        vec![target.clone()],
        &Answers::postgres(),
    )
    .await
    .expect_err("boolean does not convert to uuid");
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("rich") && p.message.contains("does not convert")),
        "{problems:?}"
    );
    // The same mapping compiles where the target says the conversion exists.
    let mut answers = Answers::postgres();
    answers.casts.insert(("boolean".into(), "uuid".into()));
    compile_toml(mapping, vec![accounts()], vec![target], &answers)
        .await
        .expect("compiles once the conversion exists");
}

// ---------------------------------------------------------------- can the plan run backwards?

fn column(name: &str, ty: &str, not_null: bool, has_default: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        sql_type: ty.into(),
        not_null,
        has_default,
        generated: false,
        identity_always: false,
        type_oid: 0,
        typmod: -1,
    }
}

async fn inverse_problems(mapping: &str, source: TableInfo, target: TableInfo) -> Vec<Problem> {
    let plan = compile_toml(
        mapping,
        vec![source.clone()],
        vec![target],
        &Answers::postgres(),
    )
    .await
    .expect("compiles");
    super::inverse::problems(&plan, &catalog(vec![source]))
}

#[tokio::test]
async fn an_identity_mapping_and_a_rename_run_backwards() {
    assert!(inverse_problems("", accounts(), accounts())
        .await
        .is_empty());
    let renamed = table(
        "public.accounts",
        &[("id", "integer"), ("amount", "bigint"), ("note", "text")],
        &["id"],
    );
    let p = inverse_problems(
        "[[tables]]\nsource = \"public.accounts\"\n[tables.columns]\nbalance = { rename = \"amount\" }\n",
        accounts(),
        renamed,
    )
    .await;
    assert!(p.is_empty(), "{p:?}");
}

#[tokio::test]
async fn filters_and_computed_columns_are_refused_by_name() {
    let target = table(
        "public.accounts",
        &[
            ("id", "integer"),
            ("balance", "bigint"),
            ("note", "text"),
            ("rich", "boolean"),
        ],
        &["id"],
    );
    let p = inverse_problems(
        "[[tables]]\nsource = \"public.accounts\"\nfilter = \"balance > 0\"\n[tables.computed]\nrich = \"balance > 100\"\n",
        accounts(),
        target,
    )
    .await;
    assert!(
        p.iter()
            .any(|p| p.message.contains("filter") && p.fix.contains("--no-fallback")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("computed column public.accounts.rich")),
        "{p:?}"
    );
}

#[tokio::test]
async fn a_dropped_column_comes_back_only_when_old_can_do_without_it() {
    let target = table(
        "public.accounts",
        &[("id", "integer"), ("balance", "bigint")],
        &["id"],
    );
    let drop = "[[tables]]\nsource = \"public.accounts\"\n[tables.columns]\nnote = \"drop\"\n";
    // Nullable `note`: a row born on NEW leaves it NULL on OLD.
    assert!(inverse_problems(drop, accounts(), target.clone())
        .await
        .is_empty());
    let mut strict = accounts();
    strict.columns[2] = column("note", "text", true, false);
    let p = inverse_problems(drop, strict.clone(), target.clone()).await;
    assert!(
        p.iter()
            .any(|p| p.message.contains("public.accounts.note") && p.fix.contains("DEFAULT")),
        "{p:?}"
    );
    strict.columns[2] = column("note", "text", true, true);
    assert!(inverse_problems(drop, strict, target).await.is_empty());
}

#[tokio::test]
async fn only_a_widening_cast_runs_backwards() {
    let wider = table(
        "public.accounts",
        &[("id", "bigint"), ("balance", "numeric"), ("note", "text")],
        &["id"],
    );
    assert!(inverse_problems("", accounts(), wider).await.is_empty());
    let narrower = table(
        "public.accounts",
        &[("id", "integer"), ("balance", "integer"), ("note", "text")],
        &["id"],
    );
    let p = inverse_problems("", accounts(), narrower).await;
    assert!(
        p.iter()
            .any(|p| p.message.contains("balance") && p.message.contains("can lose values")),
        "{p:?}"
    );
}
