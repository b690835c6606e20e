//! A PostgreSQL that accepts TLS only (hostssl lines only in its pg_hba.conf), as the
//! store and as a source, under libpq's modes; refusals; client certificates.

use std::time::Duration;

use hookrelay_sources::postgres::PostgresSource;
use hookrelay_store::Store;
use serde_json::json;

use super::{certs::Pki, pg_connect};
use crate::{
    faults::{PgInstance, ServerTls},
    harness::*,
};

const WAIT: Duration = Duration::from_secs(60);

/// `certuser` must present a client certificate; everyone else is trusted, over TLS.
const HBA: &str = "\
hostssl all certuser 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
local all all trust
";

/// A TLS-only server presenting `cert`, plus the PKI that made it.
fn server(pki: &Pki, cert: super::certs::Issued) -> PgInstance {
    PgInstance::start_tls(&ServerTls {
        cert: cert.cert,
        key: cert.key,
        client_ca: pki.ca_pem(),
        hba: HBA.into(),
    })
}

/// `postgres://postgres@<host>:<port>/<db>?<query>`.
fn url(pg: &PgInstance, host: &str, db: &str, query: &str) -> String {
    format!("postgres://postgres@{host}:{}/{db}?{query}", pg.port)
}

async fn admin(pg: &PgInstance, sql: &str) {
    pg_connect(&url(pg, "127.0.0.1", "postgres", "sslmode=require"))
        .await
        .expect("admin connection over TLS")
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_source_connect_under_each_mode_and_deliver() {
    init_logs();
    let pki = Pki::new();
    let pg = server(&pki, pki.server(&["127.0.0.1"]));
    let ca = pki.ca_file.display().to_string();

    // The server refuses plaintext: what follows is TLS or nothing.
    let refused = refusal(pg_connect(&url(&pg, "127.0.0.1", "postgres", "sslmode=disable")).await);
    assert!(refused.contains("no encryption"), "{refused}");

    // (store query, source host, source query): the certificate names 127.0.0.1
    // only, so verify-ca is shown over "localhost" (no host-name check).
    let rounds = [
        (
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "localhost",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        (
            "sslmode=require".to_owned(),
            "127.0.0.1",
            "sslmode=prefer".to_owned(),
        ),
        (
            "sslmode=prefer".to_owned(),
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    ];
    for (i, (store_q, source_host, source_q)) in rounds.iter().enumerate() {
        let store_db = format!("store_{i}");
        let shop_db = format!("shop_{i}");
        admin(&pg, &format!("create database {store_db}")).await;
        admin(&pg, &format!("create database {shop_db}")).await;
        let shop_url = url(&pg, source_host, &shop_db, source_q);
        create_orders(&pg_connect(&shop_url).await.expect("source over TLS")).await;
        let store_url = url(&pg, "127.0.0.1", &store_db, store_q);
        let cfg = relay_config(&store_url, &shop_url);
        let relay = start_relay(cfg.clone()).await;
        let api = Api::new(relay.api_addr);
        let rx = TestReceiver::start().await;
        api.subscribe(&rx.url, json!({})).await;
        pg_connect(&shop_url)
            .await
            .expect("writer")
            .batch_execute(&format!(
                "insert into orders (id, status) values ({i}, 'paid')"
            ))
            .await
            .expect("insert");
        let got = rx.wait_delivered(1, WAIT).await;
        assert_eq!(got[0].json()["after"]["status"], "paid", "round {i}");
        relay.shutdown().await;

        // `check` reports what each connection is protected by.
        let dir = pki.dir.join(format!("check-{i}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = write_config(&cfg, &dir);
        let (code, out, err) =
            crate::cli::hookrelay(&["check", "--config", file.to_str().expect("path")], &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("ok    store TLS: TLSv1.3"), "{out}");
        assert!(out.contains("ok    source shop TLS: TLSv1.3"), "{out}");
        if i == 0 {
            assert!(
                out.contains(&format!(
                    "sslmode=verify-full, certificate and host name verified against {ca}"
                )),
                "{out}"
            );
            assert!(
                out.contains(&format!(
                    "sslmode=verify-ca, certificate verified against {ca}, host name not checked"
                )),
                "{out}"
            );
        } else {
            assert!(out.contains("certificate not verified"), "{out}");
        }
    }
}

/// The message of a connection that had to be refused.
fn refusal(connected: Result<tokio_postgres::Client, String>) -> String {
    match connected {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e,
    }
}

/// A store URL whose migration must be refused; returns the message.
async fn refused(url: &str) -> String {
    let store = Store::connect(url, 2).expect("url parses");
    let err = store.migrate().await.expect_err("refused");
    assert!(
        !err.is_transient(),
        "a refused certificate is not retried: {err}"
    );
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_host_mismatch_and_expired_certificate_are_each_refused() {
    init_logs();
    let pki = Pki::new();
    let pg = server(&pki, pki.server(&["127.0.0.1"]));
    let ca = pki.ca_file.display().to_string();
    let other = pki.other_ca_file.display().to_string();

    let wrong_ca = refused(&url(
        &pg,
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    ))
    .await;
    assert!(
        wrong_ca.contains(&format!(
            "the certificate of 127.0.0.1 is not signed by a CA in {other}"
        )),
        "{wrong_ca}"
    );

    let mismatch = refused(&url(
        &pg,
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        mismatch.contains("host name mismatch: the certificate of localhost is issued for 127.0.0.1, not localhost"),
        "{mismatch}"
    );

    // A source is refused the same way, through `check`.
    let source = PostgresSource::new(
        relay_config(
            "postgres://unused@127.0.0.1/x",
            &url(
                &pg,
                "127.0.0.1",
                "postgres",
                &format!("sslmode=verify-ca&sslrootcert={other}"),
            ),
        )
        .sources[0]
            .clone(),
    )
    .expect("source");
    let err = source.check().await.expect_err("refused").to_string();
    assert!(err.contains("is not signed by a CA in"), "{err}");

    let stale = server(&pki, pki.expired_server(&["127.0.0.1"]));
    let expired = refused(&url(
        &stale,
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;
    assert!(
        expired.contains("the certificate of 127.0.0.1 expired at 2020-01-02T00:00:00Z"),
        "{expired}"
    );
    // `require` does not verify, as in libpq: the same server is fine.
    pg_connect(&url(&stale, "127.0.0.1", "postgres", "sslmode=require"))
        .await
        .expect("require does not verify");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_authentication() {
    init_logs();
    let pki = Pki::new();
    let pg = server(&pki, pki.server(&["127.0.0.1"]));
    admin(&pg, "create role certuser login").await;
    let ca = pki.ca_file.display().to_string();
    let mine = pki.client("certuser");
    let cert = pki.write("certuser.crt", &mine.cert).display().to_string();
    let key = pki.write("certuser.key", &mine.key).display().to_string();
    let base = format!("postgres://certuser@127.0.0.1:{}/postgres", pg.port);

    let without =
        refusal(pg_connect(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")).await);
    assert!(without.contains("certificate"), "{without}");

    let with = pg_connect(&format!(
        "{base}?sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"
    ))
    .await
    .expect("client certificate accepted");
    let who: String = with
        .query_one("select current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, "certuser");

    // A store on that login migrates (the pools and the migration connection carry
    // the certificate too).
    admin(&pg, "create database certstore owner certuser").await;
    let store = Store::connect(
        &format!(
            "postgres://certuser@127.0.0.1:{}/certstore?sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}",
            pg.port
        ),
        2,
    )
    .expect("url");
    store
        .migrate()
        .await
        .expect("migrate with a client certificate");
    store.ping().await.expect("pool with a client certificate");
}
