//! A merge through a switch: OLD's `users` and `profiles` (one profile per user, keyed by
//! the user) are one `people` row on NEW. After a cutover each change the app makes to a
//! person on NEW comes back to OLD as the user row and the profile row: a profile exists on
//! OLD while one of its columns is set on NEW, and goes when they become all NULL (an empty
//! profile NEW never set stays); a key change moves both; a person
//! deleted on NEW loses its profile before the user (OLD's foreign key has no cascade); a
//! column the mapping drops keeps OLD's value. After a fallback OLD's writes reach NEW again.

use std::time::Duration;

use crate::support::compare::{converge_with, rows};
use crate::support::daemon::{config, free_listen, Daemon};
use crate::support::{fresh_db, pair, TestDb};

const OLD_DDL: &str = "
CREATE TABLE users (id bigserial PRIMARY KEY, name text);
CREATE TABLE profiles (user_id bigint PRIMARY KEY REFERENCES users, bio text, city text,
                       updated_at timestamptz NOT NULL DEFAULT '2020-01-01');
INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 20) g;
INSERT INTO profiles (user_id, bio, city, updated_at)
     SELECT g, CASE WHEN g % 4 = 1 THEN NULL ELSE 'bio ' || g END, 'city ' || g, '2019-06-01'
       FROM generate_series(1, 20) g WHERE g % 2 = 1 AND g NOT IN (3, 5);
-- Profiles with nothing in them: NEW cannot tell them from no profile.
INSERT INTO profiles (user_id) VALUES (3), (5);";
const NEW_DDL: &str =
    "CREATE TABLE people (id bigserial PRIMARY KEY, name text, bio text, town text)";
const MAPPING: &str = r#"
[[tables]]
source = "public.users"
target = "public.people"

[[tables]]
source = "public.profiles"
target = "public.people"
merge = true
[tables.columns]
user_id = { rename = "id" }
city = { rename = "town" }
updated_at = "drop"
"#;

const OLD_ROWS: &str = "SELECT u.id || '|' || coalesce(u.name, '-') || '|' || coalesce(p.bio, '-') \
     || '|' || coalesce(p.city, '-') FROM users u LEFT JOIN profiles p ON p.user_id = u.id ORDER BY u.id";
const NEW_ROWS: &str = "SELECT id || '|' || coalesce(name, '-') || '|' || coalesce(bio, '-') \
     || '|' || coalesce(town, '-') FROM people ORDER BY id";
const OLD_PROFILES: &str = "SELECT user_id::text FROM profiles ORDER BY user_id";

async fn converge(db: &TestDb) -> Vec<String> {
    converge_with(db, OLD_ROWS, NEW_ROWS, Duration::from_secs(60)).await
}

async fn start(db: &TestDb) -> Daemon {
    let listen = free_listen();
    let d = Daemon::start(&config(db, &listen, MAPPING), &listen);
    d.wait_ready().await;
    crate::switch::backfill_done(db).await;
    converge(db).await;
    d
}

#[tokio::test]
async fn a_merge_runs_backwards_as_each_merged_tables_rows() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(OLD_DDL).await.unwrap();
    db.target.batch_execute(NEW_DDL).await.unwrap();
    let mut d = start(&db).await;
    let (s, t) = (&db.source, &db.target);
    let (code, out) = crate::switch::cli_async(&d, &["check", "--fallback"]).await;
    assert_eq!(code, Some(0), "check --fallback: {out}");
    // The reverse stream compares a part before and after each update of the merged row.
    let (code, out) = crate::switch::cli_async(&d, &["cutover", "--dry-run"]).await;
    assert_eq!(code, Some(2), "cutover --dry-run: {out}");
    assert!(
        out.contains("public.people is a merged row") && out.contains("REPLICA IDENTITY FULL"),
        "{out}"
    );
    t.batch_execute("ALTER TABLE people REPLICA IDENTITY FULL")
        .await
        .unwrap();
    let (code, out) = crate::switch::cli_async(&d, &["cutover", "--verify-sample", "50"]).await;
    assert_eq!(code, Some(0), "cutover: {out}\n{}", d.log());

    // The app on NEW, one transaction per change.
    for sql in [
        // Born on NEW with a bio: a user and a profile on OLD.
        "INSERT INTO people (id, name, bio) VALUES (101, 'born with bio', 'hello')",
        // Born on NEW with nothing a profile holds: a user only.
        "INSERT INTO people (id, name) VALUES (102, 'born bare')",
        // A user without a profile gets a town: the profile is created.
        "UPDATE people SET town = 'new town' WHERE id = 2",
        // A profile emptied: it goes.
        "UPDATE people SET bio = NULL, town = NULL WHERE id = 7",
        // A profile changed: updated_at (dropped by the mapping) keeps OLD's value.
        "UPDATE people SET bio = 'changed' WHERE id = 11",
        // A person with a profile deleted: the profile goes first (no cascade on OLD).
        "DELETE FROM people WHERE id = 9",
        // The name of a person whose OLD profile is empty changes: the profile had nothing
        // on NEW before and has nothing now, so OLD's empty row stays.
        "UPDATE people SET name = 'renamed' WHERE id = 5",
        // A key change: user and profile move together (no cascade on OLD).
        "UPDATE people SET id = 113 WHERE id = 13",
        // Born and gone in one transaction: nothing on OLD.
        "BEGIN; INSERT INTO people (id, town) VALUES (103, 'brief'); DELETE FROM people WHERE id = 103; COMMIT",
    ] {
        t.batch_execute(sql).await.unwrap();
    }
    let all = converge(&db).await;
    assert!(
        all.contains(&"101|born with bio|hello|-".to_string()),
        "{all:?}"
    );
    assert!(all.contains(&"102|born bare|-|-".to_string()), "{all:?}");
    let profiles = rows(s, OLD_PROFILES).await;
    let mut expected: Vec<String> = [1, 2, 3, 5, 11, 15, 17, 19, 101, 113]
        .iter()
        .map(|i| i.to_string())
        .collect();
    expected.sort(); // `rows` sorts as text
    assert_eq!(
        profiles, expected,
        "OLD's profiles: one per person with a profile column set on NEW, and 3 and 5 (empty)"
    );
    let kept = rows(
        s,
        "SELECT user_id || ' ' || updated_at::date FROM profiles WHERE user_id IN (11, 101) ORDER BY 1",
    )
    .await;
    assert_eq!(
        kept,
        vec!["101 2020-01-01".to_string(), "11 2019-06-01".into()],
        "a dropped column keeps OLD's value; a row born on NEW gets OLD's default"
    );

    // Back to OLD: its writes to both tables reach the one people row again.
    let (code, out) = crate::switch::cli_async(&d, &["fallback"]).await;
    assert_eq!(code, Some(0), "fallback: {out}\n{}", d.log());
    s.batch_execute(
        "INSERT INTO profiles (user_id, bio) VALUES (102, 'late bio');
         UPDATE profiles SET city = 'moved' WHERE user_id = 101;
         DELETE FROM profiles WHERE user_id = 2;",
    )
    .await
    .unwrap();
    let all = converge(&db).await;
    assert!(
        all.contains(&"102|born bare|late bio|-".to_string()),
        "{all:?}"
    );
    assert!(
        all.contains(&"101|born with bio|hello|moved".to_string()),
        "{all:?}"
    );
    assert!(all.contains(&"2|user 2|-|-".to_string()), "{all:?}");
    d.stop();
}
