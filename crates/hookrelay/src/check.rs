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
            Ok(()) => println!("ok    store {}", redact_url(&cfg.store.url)),
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
        let result = match src.kind {
            SourceKind::Postgres => match PostgresSource::new(src.clone()) {
                Ok(s) => s.check().await.map(|(problems, n)| {
                    notes = n;
                    problems
                }),
                Err(e) => Err(e),
            },
            SourceKind::Mongodb => hookrelay_sources::mongodb::check(src).await.map(|n| {
                notes = n;
                Vec::new()
            }),
            SourceKind::Mysql => MysqlSource::check(src).await.map(|(problems, n)| {
                notes = n;
                problems
            }),
        };
        match result {
            Ok(problems) if problems.is_empty() => {
                let what = match src.kind {
                    SourceKind::Mongodb => {
                        format!("{} collection pattern(s)", src.collections.len())
                    }
                    _ => format!("{} table pattern(s)", src.tables.len()),
                };
                println!("ok    source {} ({what})", src.name);
                for note in notes {
                    println!("note  source {}: {note}", src.name);
                }
            }
            Ok(problems) => {
                failed += 1;
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
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}
