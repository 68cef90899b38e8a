//! The test harness itself: clusters, databases, authentication, TLS, proxy, crash and restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use remodel::cluster::{connect_no_tls, loopback_url};
use tokio_postgres::error::SqlState;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn one_string(client: &tokio_postgres::Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn pair_runs_two_logical_clusters() {
    let pair = pair();
    assert_ne!(pair.source.port(), pair.target.port());
    let mut system_ids = Vec::new();
    for cluster in [&pair.source, &pair.target] {
        let client = cluster.client("postgres").await;
        assert_eq!(one_string(&client, "SHOW wal_level").await, "logical");
        assert_eq!(
            one_string(&client, "SHOW max_replication_slots").await,
            "64"
        );
        assert_eq!(
            one_string(&client, "SHOW listen_addresses").await,
            "127.0.0.1"
        );
        assert_eq!(one_string(&client, "SHOW server_encoding").await, "UTF8");
        assert_eq!(one_string(&client, "SHOW fsync").await, "on");
        let id: i64 = client
            .query_one("SELECT system_identifier FROM pg_control_system()", &[])
            .await
            .unwrap()
            .get(0);
        system_ids.push(id);
    }
    assert_ne!(
        system_ids[0], system_ids[1],
        "source and target are one server"
    );
}

#[tokio::test]
async fn fresh_dbs_are_isolated() {
    let pair = pair();
    let (a, b) = tokio::join!(fresh_db(pair), fresh_db(pair));
    assert_ne!(a.name, b.name);
    for (client, name) in [
        (&a.source, &a.name),
        (&a.target, &a.name),
        (&b.source, &b.name),
    ] {
        assert_eq!(
            &one_string(client, "SELECT current_database()::text").await,
            name
        );
    }
    a.source
        .batch_execute("CREATE TABLE only_here (id int); INSERT INTO only_here VALUES (1)")
        .await
        .unwrap();
    let exists = "SELECT (to_regclass('only_here') IS NOT NULL)::text";
    assert_eq!(one_string(&a.source, exists).await, "true");
    assert_eq!(one_string(&a.target, exists).await, "false");
    assert_eq!(one_string(&b.source, exists).await, "false");

    // The URLs lead to the same databases.
    let via_url = connect_no_tls(&a.source_url).await.unwrap();
    assert_eq!(one_string(&via_url, exists).await, "true");
    let via_url = connect_no_tls(&a.target_url).await.unwrap();
    assert_eq!(
        one_string(&via_url, "SELECT current_database()::text").await,
        a.name
    );
}

#[tokio::test]
async fn scram_and_md5_roles_need_their_password() {
    let cluster = &pair().source;
    let scram = unique_name("scram");
    let md5 = unique_name("md5");
    let scram_pw = "s3cret pw/€:@";
    let md5_pw = "md5-secret";
    cluster
        .create_role_with_password(&scram, scram_pw, PasswordAuth::ScramSha256)
        .await;
    cluster
        .create_role_with_password(&md5, md5_pw, PasswordAuth::Md5)
        .await;

    let admin = cluster.client("postgres").await;
    let stored = |role: String| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = $1",
                    &[&role],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(stored(scram.clone()).await, "SCRAM-SHA-256");
    assert!(stored(md5.clone()).await.starts_with("md5"));

    for (role, pw) in [(&scram, scram_pw), (&md5, md5_pw)] {
        let client = connect_no_tls(&cluster.url_with_password("postgres", role, pw))
            .await
            .unwrap_or_else(|e| panic!("{role} with the right password: {e}"));
        assert_eq!(
            &one_string(&client, "SELECT current_user::text").await,
            role
        );

        let err = connect_no_tls(&cluster.url_with_password("postgres", role, "wrong"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{role} logged in with a wrong password"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{role}: {err}"
        );

        assert!(
            connect_no_tls(&cluster.url("postgres", role))
                .await
                .is_err(),
            "{role} logged in without a password"
        );
    }
}

fn psql(
    tls: &TlsSource,
    host: &str,
    user: &str,
    password: &str,
    ca: &Path,
) -> std::process::Output {
    let conninfo = format!(
        "host={host} port={} dbname=postgres user={user} sslmode=verify-full sslrootcert={} \
         connect_timeout=10",
        tls.cluster.port(),
        ca.display()
    );
    let mut cmd = Command::new(tls.cluster.client_tool("psql"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("PGPASSWORD", password)
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .arg(conninfo)
        .output()
        .expect("running psql")
}

#[tokio::test]
async fn tls_cluster_serves_a_verifiable_certificate() {
    let tls = tls_source();
    let role = unique_name("tls");
    let pw = "tls-secret";
    tls.cluster
        .create_role_with_password(&role, pw, PasswordAuth::ScramTlsOnly)
        .await;

    for host in ["127.0.0.1", "localhost"] {
        let out = psql(tls, host, &role, pw, &tls.certs.ca_pem_path);
        assert!(
            out.status.success(),
            "psql over verify-full TLS to {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");
    }

    // The TLS-only role may not connect in plain text.
    let err = connect_no_tls(&tls.cluster.url_with_password("postgres", &role, pw))
        .await
        .expect_err("a TLS-only role connected without TLS");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );

    // A client trusting another CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    let other_certs = tls_certs(other.path());
    let out = psql(tls, "127.0.0.1", &role, pw, &other_certs.ca_pem_path);
    assert!(
        !out.status.success(),
        "psql accepted a certificate of another CA"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
}

#[tokio::test]
async fn proxy_forwards_cuts_and_blocks() {
    let pair = pair();
    let proxy = Proxy::start(pair.source.port()).await;
    let url = loopback_url(proxy.port, "postgres", "postgres", None);

    let client = connect_no_tls(&url).await.unwrap();
    assert_eq!(
        one_string(&client, "SELECT 'through the proxy'").await,
        "through the proxy"
    );
    assert_eq!(proxy.active(), 1);
    assert_eq!(proxy.accepted(), 1);

    proxy.cut_all();
    let c = &client;
    wait_until("the cut connection to fail", secs(10), || async move {
        match c.simple_query("SELECT 1").await {
            Err(e) => Ok(e),
            Ok(_) => Err("the query still works"),
        }
    })
    .await;
    assert!(client.is_closed());
    let p = &proxy;
    wait_until_eq("no proxied connection", secs(10), 0, || async move {
        p.active()
    })
    .await;

    // New connections go through again.
    let client = connect_no_tls(&url).await.unwrap();
    assert_eq!(one_string(&client, "SELECT 'again'").await, "again");

    // Blocked: nothing moves until unblocked, then the held query completes.
    proxy.set_blocked(true);
    let mut query = tokio::spawn(async move {
        let row = client.query_one("SELECT 42", &[]).await?;
        Ok::<i32, tokio_postgres::Error>(row.get(0))
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut query)
            .await
            .is_err(),
        "a query got through a blocked proxy"
    );
    // A connection opened while blocked hangs too.
    let url2 = url.clone();
    let mut connecting = tokio::spawn(async move { connect_no_tls(&url2).await.map(|_| ()) });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut connecting)
            .await
            .is_err(),
        "a connection got through a blocked proxy"
    );
    proxy.set_blocked(false);
    let answer = tokio::time::timeout(secs(10), query)
        .await
        .expect("the query completes after unblocking")
        .unwrap()
        .unwrap();
    assert_eq!(answer, 42);
    tokio::time::timeout(secs(10), connecting)
        .await
        .expect("the connection completes after unblocking")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn private_cluster_survives_kill9_and_restarts() {
    let cluster = private_cluster(ClusterOptions {
        wal_sender_timeout: Some(secs(3)),
        logical_decoding_work_mem_kb: Some(64),
        ..ClusterOptions::default()
    })
    .await;
    let port = cluster.port();
    let client = cluster.client("postgres").await;
    assert_eq!(one_string(&client, "SHOW wal_sender_timeout").await, "3s");
    assert_eq!(
        one_string(&client, "SHOW logical_decoding_work_mem").await,
        "64kB"
    );
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)")
        .await
        .unwrap();

    let pid = cluster.pid().expect("running");
    cluster.kill9().await;
    assert_eq!(cluster.pid(), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "postmaster still there"
    );
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert!(connect_no_tls(&cluster.admin_url("postgres"))
        .await
        .is_err());

    cluster.restart().await;
    assert_eq!(cluster.port(), port);
    let client = cluster.client("postgres").await;
    assert_eq!(
        one_string(&client, "SELECT count(*)::text FROM kept").await,
        "2"
    );
    let log = std::fs::read_to_string(cluster.log_path()).unwrap();
    assert!(log.contains("automatic recovery in progress"), "{log}");

    cluster.stop().await;
    assert_eq!(cluster.pid(), None);
    cluster.restart().await;
    let client = cluster.client("postgres").await;
    assert_eq!(
        one_string(&client, "SELECT count(*)::text FROM kept").await,
        "2"
    );

    // Dropping the handle shuts the server down and removes its dir.
    let dir = cluster.data_dir();
    let pid = cluster.pid().expect("running");
    drop(client);
    drop(cluster);
    let dir = &dir;
    wait_until("the private cluster to be gone", secs(30), || async move {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        if dir.exists() || alive {
            Err(format!(
                "dir exists: {}, postmaster alive: {alive}",
                dir.exists()
            ))
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "shared cluster")]
async fn shared_clusters_refuse_crash_operations() {
    pair().source.kill9().await;
}
