//! Switch-over and fallback (`remodel cutover`, `fallback`, `complete`) under a running app
//! writer: every write the app committed exists on both sides, nothing loops, ids never
//! collide, a fenced database refuses the app (its owner too), an abort leaves OLD writable,
//! a non-invertible mapping is refused, and a switch killed midway is undone or resumed.
//!
//! The mapping renames a column, widens a type and drops a column, so the reverse stream runs
//! through a real inverse: OLD `accounts(id, owner, balance int, note)` ↔ NEW
//! `accounts(id, holder, balance bigint)`; OLD keeps `note` on rows NEW changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::support::compare::{converge_with, rows, seed};
use crate::support::daemon::{config, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};

pub const OLD_DDL: &str = "CREATE TABLE accounts (id bigserial PRIMARY KEY, owner text NOT NULL, \
                       balance int NOT NULL, note text)";
pub const NEW_DDL: &str = "CREATE TABLE accounts (id bigserial PRIMARY KEY, holder text NOT NULL, \
                       balance bigint NOT NULL)";
pub const MAPPING: &str = "[[tables]]\nsource = \"public.accounts\"\n\
                       [tables.columns]\nowner = { rename = \"holder\" }\nnote = \"drop\"\n";
pub const OLD_ROWS: &str = "SELECT id || ':' || owner || ':' || balance FROM accounts ORDER BY id";
pub const NEW_ROWS: &str = "SELECT id || ':' || holder || ':' || balance FROM accounts ORDER BY id";
const SEED_ROWS: i64 = 100;

pub async fn setup() -> TestDb {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(OLD_DDL).await.unwrap();
    db.target.batch_execute(NEW_DDL).await.unwrap();
    db.source
        .batch_execute(&format!(
            "INSERT INTO accounts (owner, balance, note) \
             SELECT 'seed' || g, g, 'seed-note' FROM generate_series(1, {SEED_ROWS}) g"
        ))
        .await
        .unwrap();
    db
}

/// Run a `remodel` command with the daemon's config, off the async runtime (it blocks while
/// the daemon must go on); (exit code, output).
pub async fn cli_async(d: &Daemon, args: &[&str]) -> (Option<i32>, String) {
    cli_env(d, args, &[]).await
}

pub async fn cli_env(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let cfg = d.config_path.display().to_string();
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["--config".to_string(), cfg]);
    // The daemon's own environment (a shipped example's connection overrides), then `env`.
    let env: Vec<(String, String)> = d
        .env
        .iter()
        .cloned()
        .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        remodel_cmd(&refs, &env)
    })
    .await
    .unwrap()
}

pub async fn start(db: &TestDb) -> Daemon {
    start_with(db, MAPPING).await
}

pub async fn start_with(db: &TestDb, mapping: &str) -> Daemon {
    let listen = free_listen();
    let d = Daemon::start(&config(db, &listen, mapping), &listen);
    d.wait_ready().await;
    backfill_done(db).await;
    converge(db).await;
    d
}

/// Wait until every table's backfill is done.
pub async fn backfill_done(db: &TestDb) {
    let t = &db.target;
    wait_until("backfill done", Duration::from_secs(60), || async move {
        let done: Option<bool> = t
            .query_one(
                "SELECT bool_and(state = 'done') FROM remodel.backfill_tables",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        (done == Some(true))
            .then_some(())
            .ok_or(format!("{done:?}"))
    })
    .await;
}

/// Wait until OLD and NEW hold the same rows (through the mapping).
pub async fn converge(db: &TestDb) -> Vec<String> {
    converge_with(db, OLD_ROWS, NEW_ROWS, Duration::from_secs(60)).await
}

/// The app: writes to the side `side` names (0 OLD, 1 NEW), one row change per transaction,
/// and keeps what it committed. A write the fence refuses is retried (as an app would after
/// its switch), never counted; any other error fails the test.
pub struct App {
    pub side: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    pub committed: Arc<AtomicU64>,
    /// Of those, the writes committed on OLD.
    pub committed_old: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<BTreeMap<i64, (String, i64)>>,
}

impl App {
    pub async fn start(db: &TestDb, seed: u64) -> App {
        let side = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let committed_old = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let old = remodel::cluster::connect_no_tls(&db.source_url)
            .await
            .unwrap();
        let new = remodel::cluster::connect_no_tls(&db.target_url)
            .await
            .unwrap();
        let mut model: BTreeMap<i64, (String, i64)> = BTreeMap::new();
        for r in old
            .query("SELECT id, owner, balance FROM accounts", &[])
            .await
            .unwrap()
        {
            model.insert(r.get(0), (r.get(1), i64::from(r.get::<_, i32>(2))));
        }
        let (s, st, c, rf) = (
            side.clone(),
            stop.clone(),
            committed.clone(),
            refused.clone(),
        );
        let co = committed_old.clone();
        let task = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut n = 0u64;
            while !st.load(Ordering::SeqCst) {
                n += 1;
                let on_new = s.load(Ordering::SeqCst) == 1;
                let (c2, col) = if on_new {
                    (&new, "holder")
                } else {
                    (&old, "owner")
                };
                let ids: Vec<i64> = model.keys().copied().collect();
                let pick = rng.gen_range(0..10);
                let r = if pick < 5 || ids.is_empty() {
                    let owner = format!("app{n}");
                    let bal = rng.gen_range(0..1000i64);
                    write(c2, &format!("INSERT INTO accounts ({col}, balance) VALUES ($1, $2::bigint::int) RETURNING id"), &owner, bal)
                        .await
                        .map(|id| {
                            let id = id.expect("insert returns its id");
                            assert!(!model.contains_key(&id), "id {id} handed out twice (on {})", if on_new { "NEW" } else { "OLD" });
                            model.insert(id, (owner, bal));
                        })
                } else if pick < 9 {
                    let id = ids[rng.gen_range(0..ids.len())];
                    let bal = rng.gen_range(0..1000i64);
                    let owner = model[&id].0.clone();
                    write(c2, &format!("UPDATE accounts SET balance = $2::bigint::int WHERE id = $1::text::bigint AND {col} = {col} RETURNING id"), &id.to_string(), bal)
                        .await
                        .map(|_| {
                            model.insert(id, (owner, bal));
                        })
                } else {
                    let id = ids[rng.gen_range(0..ids.len())];
                    write(c2, "DELETE FROM accounts WHERE id = $1::text::bigint AND $2::bigint IS NOT NULL RETURNING id", &id.to_string(), 0)
                        .await
                        .map(|_| {
                            model.remove(&id);
                        })
                };
                match r {
                    Ok(()) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        if !on_new {
                            co.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(code) if code == "25006" => {
                        rf.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(code) => panic!("the app's write failed: {code}"),
                }
            }
            model
        });
        App {
            side,
            stop,
            committed,
            committed_old,
            refused,
            task,
        }
    }

    pub async fn wait_committed(&self, more: u64) {
        let target = self.committed.load(Ordering::SeqCst) + more;
        let c = self.committed.clone();
        wait_until("the app commits", Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                let n = c.load(Ordering::SeqCst);
                if n >= target {
                    Ok(())
                } else {
                    Err(n)
                }
            }
        })
        .await;
    }

    /// Stop; the model of what it committed, and how many writes it committed in all.
    pub async fn finish(self) -> (BTreeMap<i64, (String, i64)>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let m = self.task.await.unwrap();
        (m, self.committed.load(Ordering::SeqCst))
    }
}

/// One statement in its own transaction; the id it returned, or the SQLSTATE it failed with.
async fn write(c: &Client, sql: &str, a: &str, b: i64) -> Result<Option<i64>, String> {
    match c.query_opt(sql, &[&a, &b]).await {
        Ok(r) => Ok(r.map(|r| r.get(0))),
        Err(e) => Err(e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

fn model_rows(m: &BTreeMap<i64, (String, i64)>) -> Vec<String> {
    m.iter()
        .map(|(id, (o, b))| format!("{id}:{o}:{b}"))
        .collect()
}

pub async fn changes_applied(d: &Daemon) -> f64 {
    let Some((_, body)) = d.get("/metrics").await else {
        return -1.0;
    };
    body.lines()
        .filter(|l| l.starts_with("remodel_changes_applied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn phase(d: &Daemon) -> String {
    let (code, out) = cli_async(d, &["status", "--json"]).await;
    assert!(code.is_some(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["phase"]["phase"].as_str().unwrap_or("?").to_string()
}

#[tokio::test]
async fn cutover_then_fallback_keeps_every_app_write_on_both_sides_without_loops() {
    let db = setup().await;
    let seed = seed("cutover_then_fallback");
    let mut d = start(&db).await;
    // Counts the rows NEW's sessions tagged with a replication origin write: after a fallback,
    // only the forward leg's.
    db.target
        .batch_execute(
            "CREATE TABLE tagged_writes (at timestamptz DEFAULT now());
             CREATE FUNCTION count_tagged() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF pg_replication_origin_session_is_setup() THEN INSERT INTO tagged_writes DEFAULT VALUES; END IF;
               RETURN NULL;
             END $$;
             CREATE TRIGGER count_tagged AFTER INSERT OR UPDATE OR DELETE ON accounts
               FOR EACH ROW EXECUTE FUNCTION count_tagged();",
        )
        .await
        .unwrap();
    let app = App::start(&db, seed).await;
    app.wait_committed(30).await;

    // Cutover, while the app writes to OLD.
    let hook = d.dir.path().join("switched");
    let hook_cmd = format!("echo $REMODEL_SWITCH > {}", hook.display());
    let (code, out) = cli_async(
        &d,
        &[
            "cutover",
            "--timeout",
            "20",
            "--verify-sample",
            "50",
            "--switch-hook",
            &hook_cmd,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "cutover: {out}\n{}", d.log());
    assert!(
        out.contains("cutover: switched") && out.contains("writes unavailable"),
        "{out}"
    );
    assert!(
        out.contains("sequence"),
        "names the sequence it moved: {out}"
    );
    assert_eq!(std::fs::read_to_string(&hook).unwrap().trim(), "cutover");
    // Drained: OLD is fenced (its rows are final) and NEW holds every one of them already,
    // before the app writes anything to NEW.
    assert_eq!(
        rows(&db.target, NEW_ROWS).await,
        rows(&db.source, OLD_ROWS).await,
        "NEW has every write OLD took before its fence, the moment cutover returns"
    );
    app.side.store(1, Ordering::SeqCst);
    assert_eq!(phase(&d).await, "switched");

    // OLD refuses the app, superuser and owner included; readers go on.
    let e = db
        .source
        .execute(
            "INSERT INTO accounts (owner, balance) VALUES ('stray', 1)",
            &[],
        )
        .await
        .expect_err("OLD is fenced");
    assert_eq!(e.code().map(|c| c.code()), Some("25006"), "{e:?}");
    assert!(format!("{e:?}").contains("fenced"), "{e:?}");
    let n: i64 = db
        .source
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);

    // Nothing rewrites NEW from OLD while NEW is the app's database.
    let (code, out) = cli_async(&d, &["verify", "--repair"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("the migration is switched"), "{out}");
    let (code, out) = cli_async(&d, &["dead-letters", "--retry"]).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("the migration is switched"), "{out}");

    // The app's writes on NEW reach OLD through the inverse mapping.
    app.wait_committed(40).await;
    let (code, out) = cli_async(&d, &["fallback", "--timeout", "20"]).await;
    assert_eq!(code, Some(0), "fallback: {out}\n{}", d.log());
    assert_eq!(
        rows(&db.source, OLD_ROWS).await,
        rows(&db.target, NEW_ROWS).await,
        "OLD has every write NEW took before its fence, the moment fallback returns"
    );
    // Counted from before the app turns to OLD: every write it commits there from now on.
    let before_old_writes = app.committed_old.load(Ordering::SeqCst);
    app.side.store(0, Ordering::SeqCst);
    let e = db
        .target
        .execute(
            "INSERT INTO accounts (holder, balance) VALUES ('stray', 1)",
            &[],
        )
        .await
        .expect_err("NEW is fenced after a fallback");
    assert_eq!(e.code().map(|c| c.code()), Some("25006"), "{e:?}");

    // From here every write the app commits is on OLD (NEW refuses it).
    app.wait_committed(30).await;
    let refused = app.refused.load(Ordering::SeqCst);
    let committed_old = app.committed_old.clone();
    let (model, _) = app.finish().await;
    eprintln!("the fences refused {refused} app write(s), each retried on the other side");
    let old_writes = (committed_old.load(Ordering::SeqCst) - before_old_writes) as f64;
    let converged = converge(&db).await;
    assert_eq!(
        converged,
        model_rows(&model),
        "every committed write, on both sides (seed {seed})"
    );
    // OLD kept the column the mapping drops, on rows NEW updated too.
    let notes: i64 = db
        .source
        .query_one(
            "SELECT count(*) FROM accounts WHERE note = 'seed-note'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let seeds_left = model
        .values()
        .filter(|(o, _)| o.starts_with("seed"))
        .count() as i64;
    assert_eq!(notes, seeds_left, "OLD keeps the dropped column's values");

    // No loop: after the fallback the forward leg's writes on NEW (the only origin-tagged
    // writes there, NEW being fenced) are at most the app's writes on OLD since then (fewer
    // when a batch collapses several writes of one key); the reverse stream's writes, which
    // the forward leg reads back from OLD's WAL, must not be among them.
    // (The sides converged above: the forward leg has applied everything.)
    let tagged: i64 = db
        .target
        .query_one("SELECT count(*) FROM tagged_writes", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        tagged as f64 <= old_writes,
        "the forward leg wrote {tagged} rows on NEW after the fallback; the app wrote {old_writes} on OLD (more: remodel's reverse writes came back)\n{}",
        d.log()
    );
    d.stop();
}
