//! Authentication and TLS on both the replication and the SQL connections.

mod support;

use std::time::Duration;

use support::compare::converge;
use support::daemon::{config_urls, free_listen, Daemon};
use support::{fresh_db, pair, tls_certs, tls_source, unique_name, wait_until, PasswordAuth};

const DDL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text)";
const ROWS: &str = "SELECT id || '=' || v FROM t ORDER BY id";

async fn exits_with(d: &mut Daemon, code: i32) -> String {
    let st = d.wait_exit(Duration::from_secs(60));
    assert_eq!(st.code(), Some(code), "{}", d.log());
    d.log()
}

#[tokio::test]
async fn scram_source_and_md5_target_stream() {
    let p = pair();
    let db = fresh_db(p).await;
    db.on_both(DDL).await;
    let (srole, trole) = (unique_name("scram"), unique_name("md5"));
    p.source
        .create_role_with_password(&srole, "s3cr#t pw", PasswordAuth::ScramSha256)
        .await;
    p.target
        .create_role_with_password(&trole, "md5-pass", PasswordAuth::Md5)
        .await;
    let src = p.source.url_with_password(&db.name, &srole, "s3cr#t pw");
    let tgt = p.target.url_with_password(&db.name, &trole, "md5-pass");
    let listen = free_listen();
    let mut d = Daemon::start(&config_urls(&src, &tgt, &db.name, &listen, "", ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute("INSERT INTO t VALUES (1, 'scram'), (2, 'md5')")
        .await
        .unwrap();
    converge(&db, ROWS).await;
    d.stop();
    assert!(
        !d.log().contains("s3cr#t") && !d.log().contains("md5-pass"),
        "password in the log"
    );
    support::daemon::drop_slot(&db).await;
}

#[tokio::test]
async fn md5_on_the_replication_connection() {
    let p = pair();
    let db = fresh_db(p).await;
    db.on_both(DDL).await;
    let role = unique_name("md5src");
    p.source
        .create_role_with_password(&role, "pw-md5", PasswordAuth::Md5)
        .await;
    let src = p.source.url_with_password(&db.name, &role, "pw-md5");
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&src, &db.target_url, &db.name, &listen, "", ""),
        &listen,
    );
    d.wait_ready().await;
    db.source
        .batch_execute("INSERT INTO t VALUES (1, 'via md5')")
        .await
        .unwrap();
    converge(&db, ROWS).await;
    d.stop();
    support::daemon::drop_slot(&db).await;
}

#[tokio::test]
async fn wrong_password_is_fatal_and_never_printed() {
    let p = pair();
    let db = fresh_db(p).await;
    let role = unique_name("wrongpw");
    p.source
        .create_role_with_password(&role, "right-one", PasswordAuth::ScramSha256)
        .await;
    let src = p.source.url_with_password(&db.name, &role, "Wr0ngPassw0rd");
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&src, &db.target_url, &db.name, &listen, "", ""),
        &listen,
    );
    let log = exits_with(&mut d, 1).await;
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(!log.contains("Wr0ngPassw0rd"), "password leaked: {log}");
}

#[tokio::test]
async fn tls_verify_full_streams_over_tls() {
    let tls = tls_source();
    let p = pair();
    let name = unique_name("tls");
    tls.cluster.create_database(&name).await;
    p.target.create_database(&name).await;
    let src_admin = tls.cluster.client(&name).await;
    let tgt_admin = p.target.client(&name).await;
    src_admin.batch_execute(DDL).await.unwrap();
    tgt_admin.batch_execute(DDL).await.unwrap();
    let role = unique_name("tlsuser");
    tls.cluster
        .create_role_with_password(&role, "tls-pw", PasswordAuth::ScramTlsOnly)
        .await;
    let ca = tls.certs.ca_pem_path.display().to_string();
    let src = format!(
        "postgresql://{role}:tls-pw@localhost:{}/{name}?sslmode=verify-full&sslrootcert={ca}",
        tls.cluster.port()
    );
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&src, &p.target.admin_url(&name), &name, &listen, "", ""),
        &listen,
    );
    d.wait_ready().await;
    src_admin
        .batch_execute("INSERT INTO t VALUES (1, 'encrypted')")
        .await
        .unwrap();
    let t = &tgt_admin;
    wait_until("row over TLS", Duration::from_secs(30), || async move {
        let n: i64 = t
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
    // Both of the daemon's source connections (SQL and walsender) use TLS.
    let plain: i64 = src_admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1 AND NOT s.ssl",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    d.stop();
    src_admin
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{name}')"))
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_with_an_untrusted_ca_or_without_server_tls_fails_clearly() {
    let tls = tls_source();
    let p = pair();
    let db = fresh_db(p).await;
    let other = tempfile::tempdir().unwrap();
    let other_ca = tls_certs(other.path()).ca_pem_path.display().to_string();
    let src = format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={other_ca}",
        tls.cluster.port()
    );
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&src, &db.target_url, &db.name, &listen, "", ""),
        &listen,
    );
    let log = exits_with(&mut d, 1).await;
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    // The pair's source has no TLS: sslmode=require must refuse a plain connection.
    let src = db.source_url.replace("sslmode=disable", "sslmode=require");
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&src, &db.target_url, &db.name, &listen, "", ""),
        &listen,
    );
    let log = exits_with(&mut d, 1).await;
    assert!(log.contains("TLS"), "{log}");
}
