//! A MariaDB that accepts TLS only (`require_secure_transport`) as a source: the
//! binlog stream and metadata connections under MySQL's `ssl-mode`s; refusals.

use std::time::Duration;

use hookrelay_sources::mysql::MysqlSource;
use serde_json::json;

use super::certs::Pki;
use crate::{
    harness::*,
    mysql::{exec, mysql_config, Binlog, MariaDbInstance, MariaDbTls},
};

const WAIT: Duration = Duration::from_secs(60);

/// A TLS-only MariaDB with binlog on, presenting a certificate for 127.0.0.1 only,
/// and database `shop` with table `orders`.
async fn server(pki: &Pki) -> MariaDbInstance {
    let cert = pki.server(&["127.0.0.1"]);
    let tls = MariaDbTls {
        cert: pki.write("mariadb.crt", &cert.cert),
        key: pki.write("mariadb.key", &cert.key),
        ca: pki.ca_file.clone(),
    };
    let my = MariaDbInstance::start_tls(Binlog::Ready, &tls).await;
    let mut c = my.connect("mysql").await;
    exec(&mut c, "CREATE DATABASE shop").await;
    exec(
        &mut c,
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, status VARCHAR(20) NOT NULL)",
    )
    .await;
    my
}

/// `mysql://root@<host>:<port>/shop?<query>`; TCP even for localhost.
fn url(my: &MariaDbInstance, host: &str, query: &str) -> String {
    format!(
        "mysql://root@{host}:{}/shop?prefer_socket=false&{query}",
        my.port
    )
}

fn source(url: &str) -> hookrelay_core::config::SourceConfig {
    mysql_config("postgres://unused@127.0.0.1/x", url, &["shop.orders"], "").sources[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_source_connects_under_each_mode_and_delivers() {
    init_logs();
    let pki = Pki::new();
    let my = server(&pki).await;
    let ca = pki.ca_file.display().to_string();

    // The server refuses plaintext (MariaDB words it as a login refusal for the
    // user that the TLS rounds below log in as): what follows is TLS or nothing.
    // `check` reports a refused login as a problem (with the fix for the user).
    let plain = match MysqlSource::check(&source(&url(&my, "127.0.0.1", "ssl-mode=DISABLED"))).await
    {
        Err(e) => e.to_string(),
        Ok((problems, _)) => problems.join("; "),
    };
    assert!(
        plain.contains("insecure transport") || plain.contains("ERROR 1045 (28000)"),
        "{plain}"
    );

    // The certificate names 127.0.0.1 only: VERIFY_CA is shown over "localhost".
    let rounds = [
        (
            "127.0.0.1",
            format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
            format!("certificate and host name verified against {ca}"),
        ),
        (
            "localhost",
            format!("ssl-mode=VERIFY_CA&ssl-ca={ca}"),
            format!("certificate verified against {ca}, host name not checked"),
        ),
        (
            "127.0.0.1",
            "ssl-mode=REQUIRED".to_owned(),
            "certificate not verified".to_owned(),
        ),
        (
            "127.0.0.1",
            String::new(),
            "ssl-mode=PREFERRED, certificate not verified".to_owned(),
        ),
    ];
    for (i, (host, query, verified)) in rounds.iter().enumerate() {
        let src_url = url(&my, host, query);
        let report = MysqlSource::tls_report(&source(&src_url))
            .await
            .unwrap_or_else(|e| panic!("{src_url}: {e}"));
        assert!(report.starts_with("TLSv1."), "{report}");
        assert!(report.contains(verified), "{report}");

        let store = TestDb::new("store").await;
        let relay = start_relay(mysql_config(&store.url(), &src_url, &["shop.orders"], "")).await;
        let api = Api::new(relay.api_addr);
        let rx = TestReceiver::start().await;
        api.subscribe(&rx.url, json!({})).await;
        let mut c = my.connect("shop").await;
        exec(&mut c, &format!("INSERT INTO orders VALUES ({i}, 'paid')")).await;
        let got = rx.wait_delivered(1, WAIT).await;
        assert_eq!(got[0].json()["key"]["id"], i as i64, "{src_url}");
        relay.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_host_mismatch_and_expired_certificate_are_each_refused() {
    init_logs();
    let pki = Pki::new();
    let my = server(&pki).await;
    let ca = pki.ca_file.display().to_string();
    let other = pki.other_ca_file.display().to_string();
    let refusal = |host: &str, query: String| {
        let cfg = source(&url(&my, host, &query));
        async move {
            MysqlSource::check(&cfg)
                .await
                .expect_err("refused")
                .to_string()
        }
    };

    let wrong_ca = refusal(
        "127.0.0.1",
        format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={other}"),
    )
    .await;
    assert!(
        wrong_ca.contains(&format!(
            "the certificate of 127.0.0.1 is not signed by a CA in {other}"
        )),
        "{wrong_ca}"
    );

    let mismatch = refusal("localhost", format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")).await;
    assert!(
        mismatch.contains("host name mismatch: the certificate of localhost is issued for 127.0.0.1, not localhost"),
        "{mismatch}"
    );

    // The server switches to an expired certificate (FLUSH SSL reloads the files).
    let stale = pki.expired_server(&["127.0.0.1"]);
    pki.write("mariadb.crt", &stale.cert);
    pki.write("mariadb.key", &stale.key);
    let mut c = my.connect("mysql").await;
    exec(&mut c, "FLUSH SSL").await;
    let expired = refusal("127.0.0.1", format!("ssl-mode=VERIFY_CA&ssl-ca={ca}")).await;
    assert!(
        expired.contains("the certificate of 127.0.0.1 expired at 2020-01-02T00:00:00Z"),
        "{expired}"
    );
    // REQUIRED does not verify: the same server is fine.
    MysqlSource::check(&source(&url(&my, "127.0.0.1", "ssl-mode=REQUIRED")))
        .await
        .expect("REQUIRED does not verify");
}
