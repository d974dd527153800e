//! TLS to PostgreSQL, as a managed database (RDS, Aurora) wants it: the URL's `sslmode` and `sslrootcert` are
//! honoured. Runs against the test server `scripts/ensure-postgres.sh` starts with TLS on and a self-signed
//! certificate from a throwaway CA; the SQLite run has nothing to check.

use sqlx::Row;

use super::Store;

/// The test server's URL and the root its certificate is verified with (a throwaway CA).
fn server_and_cert() -> Option<(String, std::path::PathBuf)> {
    let server = std::env::var("WORKSPACED_TEST_POSTGRES").ok()?;
    let port = server.rsplit_once(':')?.1.split('/').next()?.to_owned();
    let marker = format!("/tmp/workspaced-pg-{port}.dir");
    let dir = std::fs::read_to_string(&marker)
        .unwrap_or_else(|_| panic!("{marker} is missing: start the test server with scripts/ensure-postgres.sh"));
    Some((server, std::path::Path::new(dir.trim()).join("ca.crt")))
}

async fn uses_tls(store: &Store) -> bool {
    let row =
        sqlx::query("SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    row.try_get::<i32, _>("tls").unwrap() == 1
}

#[tokio::test]
async fn a_url_with_sslmode_verify_full_connects_over_tls_and_checks_the_certificate() {
    let Some((server, cert)) = server_and_cert() else { return };
    let url = super::testing::fresh_postgres_database(&server).await;
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={}", cert.display());
    let store = Store::connect(&verified).await.expect("TLS, verified with the test CA as the root");
    assert!(uses_tls(&store).await, "the connection is encrypted");
    // Without that root the certificate cannot be verified: no connection rather than an unchecked one.
    let unverified = format!("{url}?sslmode=verify-full");
    assert!(Store::connect(&unverified).await.is_err(), "a certificate from an unknown CA passed verification");
    let plain = Store::connect(&format!("{url}?sslmode=disable")).await.unwrap();
    assert!(!uses_tls(&plain).await, "sslmode=disable is plain");
}
