//! The cluster's configuration: `initdb`, `pg_hba.conf`, the `include`d settings file
//! (`remodel.conf`, rewritten before every start), the copied TLS certificate and key, and the
//! group roles `pg_hba.conf` selects authentication methods by.
//!
//! It must never write outside the cluster's own temp dir, or configure the server to listen on
//! anything but 127.0.0.1.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::process::{give_to, server_command, RunAs};
use super::{io_err, set_mode, sql_err};
use super::{Cluster, ClusterError, PasswordAuth, SUPERUSER};
use crate::quote::{quote_ident, quote_literal};

/// Our settings, `include`d from `postgresql.conf` and rewritten for every port attempt.
const MANAGED_CONF: &str = "remodel.conf";

pub(super) fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

impl Cluster {
    /// `pg_hba.conf` and the `include` of our managed settings file; written once.
    pub(super) fn write_static_config(&self) -> Result<(), ClusterError> {
        let tls_lines = if self.opts.tls.is_some() {
            "hostssl   all  +remodel_auth_tls    127.0.0.1/32  scram-sha-256\n\
             hostnossl all  +remodel_auth_tls    127.0.0.1/32  reject\n\
             hostssl   all  tls_user             127.0.0.1/32  scram-sha-256\n\
             hostnossl all  tls_user             127.0.0.1/32  reject\n"
        } else {
            "host      all  +remodel_auth_tls    127.0.0.1/32  reject\n\
             host      all  tls_user             127.0.0.1/32  reject\n"
        };
        let hba = format!(
            "# Written by remodel::cluster. First match wins. A logical replication connection\n\
             # is matched by these database lines, not by `replication` ones.\n\
             {tls_lines}\
             host      all  +remodel_auth_scram  127.0.0.1/32  scram-sha-256\n\
             host      all  scram_user           127.0.0.1/32  scram-sha-256\n\
             host      all  +remodel_auth_md5    127.0.0.1/32  md5\n\
             host      all  md5_user             127.0.0.1/32  md5\n\
             host      all  all                  127.0.0.1/32  trust\n"
        );
        let hba_path = self.data_dir.join("pg_hba.conf");
        fs::write(&hba_path, hba).map_err(io_err(format!("writing {}", hba_path.display())))?;

        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .map_err(io_err(format!("opening {}", conf_path.display())))?;
        writeln!(
            conf,
            "\n# Added by remodel::cluster.\ninclude '{MANAGED_CONF}'"
        )
        .map_err(io_err(format!("writing {}", conf_path.display())))?;

        if let Some(tls) = &self.opts.tls {
            let dir = self.root.path().join("tls");
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            set_mode(&dir, 0o755)?;
            for (from, to, mode) in [
                (&tls.cert_pem, "server.crt", 0o644),
                (&tls.key_pem, "server.key", 0o600),
            ] {
                let to = dir.join(to);
                fs::copy(from, &to).map_err(io_err(format!(
                    "copying {} to {}",
                    from.display(),
                    to.display()
                )))?;
                // PostgreSQL wants the key owned by the server's user and not readable by others.
                set_mode(&to, mode)?;
                give_to(&to, self.run_as.as_ref())?;
            }
        }
        Ok(())
    }

    /// Our settings, port included: rewritten before every start attempt.
    pub(super) fn write_managed_conf(&self) -> Result<(), ClusterError> {
        let o = &self.opts;
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            ("unix_socket_directories".into(), String::new()),
            ("wal_level".into(), "logical".into()),
            (
                "max_replication_slots".into(),
                o.max_replication_slots.to_string(),
            ),
            ("max_wal_senders".into(), o.max_wal_senders.to_string()),
            ("max_connections".into(), o.max_connections.to_string()),
            ("shared_buffers".into(), "64MB".into()),
            // Throwaway clusters; fsync stays on so commits behave as in production.
            ("full_page_writes".into(), "off".into()),
            ("logging_collector".into(), "off".into()),
            ("log_line_prefix".into(), "%m [%p] %q%u@%d ".into()),
            ("lc_messages".into(), "C".into()),
        ];
        if let Some(t) = o.wal_sender_timeout {
            settings.push(("wal_sender_timeout".into(), format!("{}ms", t.as_millis())));
        }
        if let Some(kb) = o.logical_decoding_work_mem_kb {
            settings.push(("logical_decoding_work_mem".into(), format!("{kb}kB")));
        }
        if o.tls.is_some() {
            let dir = self.root.path().join("tls");
            settings.push(("ssl".into(), "on".into()));
            settings.push((
                "ssl_cert_file".into(),
                dir.join("server.crt").to_string_lossy().into_owned(),
            ));
            settings.push((
                "ssl_key_file".into(),
                dir.join("server.key").to_string_lossy().into_owned(),
            ));
        }
        settings.extend(o.extra_conf.iter().cloned());
        let mut text = String::from("# Written by remodel::cluster before every start.\n");
        for (name, value) in &settings {
            text.push_str(&format!("{name} = {}\n", conf_value(value)));
        }
        let path = self.data_dir.join(MANAGED_CONF);
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        give_to(&path, self.run_as.as_ref())
    }

    /// Group roles `pg_hba.conf` refers to; they survive restarts, so created once.
    pub(super) async fn create_auth_groups(&self) -> Result<(), ClusterError> {
        let mut sql = String::from("DO $$ BEGIN\n");
        for auth in [
            PasswordAuth::ScramSha256,
            PasswordAuth::Md5,
            PasswordAuth::ScramTlsOnly,
        ] {
            let group = auth.group();
            sql.push_str(&format!(
                "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN \
                 CREATE ROLE {ident} NOLOGIN; END IF;\n",
                lit = quote_literal(group),
                ident = quote_ident(group),
            ));
        }
        sql.push_str("END $$;");
        self.client("postgres")
            .await?
            .batch_execute(&sql)
            .await
            .map_err(sql_err("creating the authentication group roles"))
    }
}

pub(super) async fn run_initdb(
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    root: &Path,
    data_dir: &Path,
) -> Result<(), ClusterError> {
    let mut last_error = None;
    for locale in ["--locale=C.UTF-8", "--no-locale"] {
        if data_dir.exists() {
            fs::remove_dir_all(data_dir)
                .map_err(io_err(format!("removing {}", data_dir.display())))?;
        }
        let mut cmd = server_command(&bin_dir.join("initdb"), run_as, root);
        cmd.arg("-D")
            .arg(data_dir)
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--no-sync",
                locale,
            ])
            .stdin(Stdio::null());
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(io_err(format!(
                "running {}",
                bin_dir.join("initdb").display()
            )))?;
        if out.status.success() {
            return Ok(());
        }
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let locale_trouble = output.contains("locale");
        last_error = Some(ClusterError::Initdb {
            status: out.status.to_string(),
            output,
        });
        if !locale_trouble {
            break;
        }
    }
    Err(last_error.unwrap_or(ClusterError::NoBinaries))
}
