//! `hookrelay check`: the config is already valid when we get here; this proves the
//! store and every source are reachable and usable, one line per component.

use hookrelay_core::{
    config::{redact_url, SourceKind},
    Config,
};
use hookrelay_sources::{mysql::MysqlSource, postgres::PostgresSource};
use hookrelay_store::Store;

pub async fn check(cfg: &Config) -> anyhow::Result<()> {
    println!("ok    config ({} source(s))", cfg.sources.len());
    let mut failed = 0;
    match cfg.secrets() {
        Ok(secrets) => match secrets.key() {
            Some(key) => println!("ok    master key {}", key.id()),
            None => {
                println!("warn  secrets stored in plaintext (store.insecure_plaintext_secrets)")
            }
        },
        Err(e) => {
            failed += 1;
            println!("FAIL  {e}");
        }
    }
    match Store::connect(&cfg.store.url, 2) {
        Ok(store) => match store.ping().await {
            Ok(()) => {
                println!("ok    store {}", redact_url(&cfg.store.url));
                match store.refuse_transaction_pooler().await {
                    Ok(()) => println!(
                        "ok    store connections keep their sessions (no transaction pooler)"
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL  {e}");
                    }
                }
                match store_tls(&store).await {
                    Ok(tls) => println!("ok    store TLS: {tls}"),
                    Err(e) => {
                        failed += 1;
                        println!("FAIL  store TLS: {e}");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  store {}: {e}", redact_url(&cfg.store.url));
            }
        },
        Err(e) => {
            failed += 1;
            println!("FAIL  store: {e}");
        }
    }
    for src in &cfg.sources {
        // Every problem of a source, one line each, not only the first; notes are
        // worth knowing but not failures.
        let mut notes = Vec::new();
        let mut tls = None;
        let result = match src.kind {
            SourceKind::Postgres => match PostgresSource::new(src.clone()) {
                Ok(s) => {
                    let checked = s.check().await.map(|(problems, n)| {
                        notes = n;
                        problems
                    });
                    if checked.is_ok() {
                        tls = Some(s.tls_report().await);
                    }
                    checked
                }
                Err(e) => Err(e),
            },
            SourceKind::Mongodb => hookrelay_sources::mongodb::check(src).await.map(|n| {
                notes = n;
                Vec::new()
            }),
            SourceKind::Mysql => {
                let checked = MysqlSource::check(src).await.map(|(problems, n)| {
                    notes = n;
                    problems
                });
                if checked.is_ok() {
                    tls = Some(MysqlSource::tls_report(src).await);
                }
                checked
            }
        };
        if src.kind == SourceKind::Mongodb {
            tls = Some(hookrelay_sources::mongodb::tls_report(src).await);
        }
        match result {
            Ok(problems) if problems.is_empty() => {
                let what = match src.kind {
                    SourceKind::Mongodb => {
                        format!("{} collection pattern(s)", src.collections.len())
                    }
                    _ => format!("{} table pattern(s)", src.tables.len()),
                };
                println!("ok    source {} ({what})", src.name);
                match tls {
                    Some(Ok(tls)) => println!("ok    source {} TLS: {tls}", src.name),
                    Some(Err(e)) => {
                        failed += 1;
                        println!("FAIL  source {} TLS: {e}", src.name);
                    }
                    None => {}
                }
                for note in notes {
                    println!("note  source {}: {note}", src.name);
                }
            }
            Ok(problems) => {
                failed += problems.len();
                for p in problems {
                    println!("FAIL  source {}: {p}", src.name);
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  source {}: {e}", src.name);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} problem{} found (each FAIL line above says what to do)",
            if failed == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// How a store connection is protected (TLS version, what was verified).
async fn store_tls(store: &Store) -> anyhow::Result<String> {
    let connector = store.connector();
    let (client, conn) = connector
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(hookrelay_store::describe_pg(&e)))?;
    let driver = tokio::spawn(conn);
    let report = connector
        .tls_report(&client)
        .await
        .map_err(|e| anyhow::anyhow!(hookrelay_store::describe_pg(&e)));
    drop(client);
    let _ = driver.await;
    report
}
