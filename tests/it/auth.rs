//! Authentication and TLS on both the replication and the SQL connections.

use std::time::Duration;

use crate::support::compare::converge;
use crate::support::daemon::{config_urls, free_listen, Daemon};
use crate::support::{
    fresh_db, pair, tls_certs, tls_source, unique_name, wait_until, PasswordAuth,
};

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
    crate::support::daemon::drop_slot(&db).await;
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
    crate::support::daemon::drop_slot(&db).await;
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
async fn tls_verify_full_to_both_databases_and_the_password_shown_nowhere() {
    let tls = tls_source();
    let name = unique_name("tls");
    let target_db = format!("{name}_t");
    tls.cluster.create_database(&name).await;
    tls.cluster.create_database(&target_db).await;
    let src_admin = tls.cluster.client(&name).await;
    let tgt_admin = tls.cluster.client(&target_db).await;
    src_admin.batch_execute(DDL).await.unwrap();
    tgt_admin.batch_execute(DDL).await.unwrap();
    let role = unique_name("tlsuser");
    tls.cluster
        .create_role_with_password(&role, "tls-pw", PasswordAuth::ScramTlsOnly)
        .await;
    tgt_admin
        .batch_execute(&format!(
            "GRANT CREATE ON DATABASE {target_db} TO {role}; GRANT ALL ON t TO {role}"
        ))
        .await
        .unwrap();
    let ca = tls.certs.ca_pem_path.display().to_string();
    // Both sides verify-full: the CA, and the host name against the certificate.
    let url = |db: &str| {
        format!(
            "postgresql://{role}:tls-pw@localhost:{}/{db}?sslmode=verify-full&sslrootcert={ca}",
            tls.cluster.port()
        )
    };
    let listen = free_listen();
    let mut d = Daemon::start(
        &config_urls(&url(&name), &url(&target_db), &name, &listen, "", ""),
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
    // Every connection of the daemon (source SQL, walsender, target) uses TLS.
    let (tls_conns, plain): (i64, i64) = {
        let r = src_admin
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
                &[&role],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(plain, 0);
    let on_target: i64 = src_admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = $1 AND a.datname = $2 AND s.ssl",
            &[&role, &target_db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        tls_conns >= 3 && on_target >= 1,
        "{tls_conns} TLS connections, {on_target} to the target"
    );
    // The password is in no log line, metric, /status, `status` output or error.
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    let (_, status) = d.get("/status").await.expect("status");
    let cfg = d.config_path.display().to_string();
    let (_, status_cmd) = crate::support::daemon::remodel_cmd(&["status", "--config", &cfg], &[]);
    let bad_target = [(
        "REMODEL__TARGET__URL".to_string(),
        url(&target_db).replace(&format!("/{target_db}?"), "/no_such_db?"),
    )];
    let (code, error) =
        crate::support::daemon::remodel_cmd(&["verify", "--config", &cfg], &bad_target);
    assert_eq!(code, Some(2), "{error}");
    assert!(error.contains("no_such_db"), "{error}");
    d.stop();
    for (what, text) in [
        ("log", d.log()),
        ("metrics", metrics),
        ("/status", status),
        ("remodel status", status_cmd),
        ("an error", error),
    ] {
        assert!(
            !text.contains("tls-pw"),
            "the password is in {what}:\n{text}"
        );
    }
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
