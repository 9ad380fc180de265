//! TLS as the URL asks for it: `sslmode=require` encrypts, `verify-full` checks the server's
//! certificate against `sslrootcert` and its name, and the dump tools get the same settings.

mod common;
use common::pg::{Pg, URL_VAR, test_settings};
use rollback::sandbox::postgres::TRACKTION_DB;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it; plus an unrelated CA.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=rollback test CA",
    ];
    ca.extend(ec);
    openssl(
        dir,
        &[&ca[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat(),
    );
    let mut other = vec!["req", "-x509", "-days", "2", "-subj", "/CN=another CA"];
    other.extend(ec);
    openssl(
        dir,
        &[&other[..], &["-keyout", "other.key", "-out", "other.pem"]].concat(),
    );
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    openssl(
        dir,
        &[&csr[..], &["-keyout", "server.key", "-out", "server.csr"]].concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for f in ["server.key", "server.pem"] {
        rollback::host::pg::tools::chown_tree(&dir.join(f), Some("postgres")).unwrap();
    }
}

fn tls_server() -> Pg {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let mut settings = test_settings();
    settings.extra_conf = vec![
        "ssl = on".into(),
        format!(
            "ssl_cert_file = '{}'",
            dir.path().join("server.pem").display()
        ),
        format!(
            "ssl_key_file = '{}'",
            dir.path().join("server.key").display()
        ),
    ];
    let pg = Pg::in_dir(dir, settings);
    pg.server.load_tracktion(TRACKTION_DB).unwrap();
    pg
}

const SSL_IN_USE: &str = r#"let r = pg::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); print("ssl=" + r[0].ssl);"#;

#[test]
fn sslmode_require_encrypts_the_connection() {
    let pg = tls_server();
    pg.test()
        .env(URL_VAR, &format!("{}?sslmode=require", pg.url()))
        .script(SSL_IN_USE)
        .run()
        .success()
        .stdout_has("ssl=true");
    pg.test()
        .env(URL_VAR, &format!("{}?sslmode=disable", pg.url()))
        .script(SSL_IN_USE)
        .run()
        .success()
        .stdout_has("ssl=false");
}

#[test]
fn verify_full_checks_the_certificate_and_the_tools_use_it_too() {
    let pg = tls_server();
    let ca = pg.dir.path().join("ca.pem");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let run = pg
        .test()
        .env(URL_VAR, &url)
        .script(&format!(
            "{SSL_IN_USE}\nlet b = pg::safety_backup(); print(\"verified=\" + b.verified);"
        ))
        .run();
    run.success()
        .stdout_has("ssl=true")
        .stdout_has("verified=true");
    let other = pg.dir.path().join("other.pem");
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        other.display()
    );
    let run = pg.test().env(URL_VAR, &url).script(SSL_IN_USE).run();
    run.code(1)
        .stderr_has("cannot connect to PostgreSQL at 127.0.0.1")
        .stderr_has("invalid peer certificate");
    let run = pg
        .test()
        .env(URL_VAR, &format!("{}?sslmode=verify-full", pg.url()))
        .script(SSL_IN_USE)
        .run();
    run.code(2)
        .stderr_has("sslmode=verify-full needs the CA certificate");
}
