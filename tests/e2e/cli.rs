//! The binary: `check` and `migrate` diagnostics, and bad config refused with the key
//! named. (`kill -9` under load is in the fault suite, `faults/kills.rs`.)

use std::process::Command;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");

pub fn hookrelay(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("HOOKRELAY_CONFIG")
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hookrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_config_at_all_says_so() {
    let (code, _, err) = hookrelay(&["check"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no config file given") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"\n[api]\ntokens = [\"change-me-please\"]\n";
    /// (what, config text, environment, text the error must contain)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("missing file", "", &[], "no such file"),
        ("not TOML", "[store\nurl=", &[], "TOML"),
        ("bad type", &format!("{good}[dispatch]\nworkers = \"many\"\n"), &[], "dispatch.workers"),
        ("bad duration", &format!("{good}[dispatch]\ntimeout = \"soon\"\n"), &[], "dispatch.timeout"),
        ("env override", good, &[("HOOKRELAY_DISPATCH__MAX_ATTEMPTS", "0")], "dispatch.max_attempts"),
        ("env bad value", good, &[("HOOKRELAY_STORE__URL", "mysql://x")], "store.url"),
        ("no tokens", "[store]\nurl = \"postgres://x@y/z\"\n", &[], "api.tokens"),
        (
            "bad table name",
            &format!("{good}[[sources]]\nname = \"s\"\nkind = \"postgres\"\nurl = \"postgres://x/y\"\ntables = [\"orders\"]\n"),
            &[],
            "sources[0].tables[0]",
        ),
    ];
    for (i, (what, text, envs, needle)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap();
        }
        let (code, _, err) = hookrelay(&["check", "--config", path.to_str().unwrap()], envs);
        assert_eq!(code, 2, "{what}: exit code; stderr: {err}");
        assert!(
            err.contains(needle),
            "{what}: expected {needle:?} in {err:?}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_migrate_report_each_component() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = env.config_toml_file(&dir);
    let cfg = cfg.to_str().unwrap().to_owned();

    let (code, out, err) = hookrelay(&["migrate", "--config", &cfg], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied: V1__init"), "{out}");
    let (code, out, _) = hookrelay(&["migrate", "--config", &cfg], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");

    let (code, out, err) = hookrelay(&["check", "--config", &cfg], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok    store") && out.contains("ok    source shop"),
        "{out}"
    );

    // A source table without a primary key, and an unreachable source.
    env.source
        .connect()
        .await
        .batch_execute("create table public.nokey (v int)")
        .await
        .unwrap();
    let (code, out, _) = hookrelay(
        &["check", "--config", &cfg],
        &[(
            "HOOKRELAY_STORE__URL",
            "postgres://postgres@127.0.0.1:1/nowhere",
        )],
    );
    assert_eq!(code, 1);
    assert!(out.contains("FAIL  store"), "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "\"public.orders\"",
        "\"public.nokey\", \"public.missing\", \"public.orders\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, out, err) = hookrelay(&["check", "--config", &cfg], &[]);
    assert_eq!(code, 1);
    // The last line counts problems, not the components that had them.
    assert!(err.contains("2 problems found"), "{err}");
    // Every problem, each on its own line.
    let fails: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("FAIL  source shop"))
        .collect();
    assert_eq!(fails.len(), 2, "{out}");
    assert!(
        fails[0].contains("public.nokey has no primary key"),
        "{out}"
    );
    assert!(fails[1].contains("public.missing does not exist"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_refuses_while_changes_wait_then_removes_everything() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_file = env.config_toml_file(&dir);
    let cfg_file = cfg_file.to_str().unwrap().to_owned();
    let relay = start_relay(env.config()).await;
    relay.shutdown().await;
    let db = env.source.connect().await;
    // Committed while hookrelay is stopped: journalled, not yet in the store.
    db.batch_execute("insert into orders (id, status) values (1, 'waiting')")
        .await
        .unwrap();

    let (code, out, err) = hookrelay(
        &["uninstall", "--config", &cfg_file, "--source", "shop"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("1 journalled change(s)") && err.contains("--force"),
        "{err}"
    );
    let triggers = || async {
        db.query_one(
            "select count(*) from pg_trigger where tgname like 'hookrelay%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(triggers().await, 4, "nothing removed while changes wait");
    let event_triggers = || async {
        db.query_one(
            "select count(*) from pg_event_trigger where evtname like 'hookrelay%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(
        event_triggers().await,
        2,
        "the new-table capture is in place"
    );

    let (code, out, err) = hookrelay(
        &[
            "uninstall",
            "--config",
            &cfg_file,
            "--source",
            "shop",
            "--force",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("removed triggers from public.orders"), "{out}");
    assert!(out.contains("discarded 1 undelivered"), "{out}");
    assert!(out.contains("dropped schema hookrelay"), "{out}");
    assert_eq!(triggers().await, 0);
    assert_eq!(event_triggers().await, 0, "event triggers removed too");
    let schema: bool = db
        .query_one(
            "select exists (select 1 from pg_namespace where nspname = 'hookrelay')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!schema);
    // The table works as before, without hookrelay.
    db.batch_execute("insert into orders (id, status) values (2, 'plain')")
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_the_whole_tour_and_verifies_every_event() {
    let out = Command::new(BIN)
        .args(["demo", "--events", "50", "--exit-after"])
        .env_remove("HOOKRELAY_CONFIG")
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .expect("run hookrelay demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("50/50 events delivered and verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 retried after a refused attempt"),
        "{stdout}"
    );
    assert!(stdout.contains("per-key order kept"), "{stdout}");
    assert!(
        stdout.contains("arrived again with the same webhook-id"),
        "{stdout}"
    );
    assert!(!stdout.contains("did NOT verify"), "{stdout}");
}

/// `run` without a valid master key never starts; its value is never printed; and
/// `rotate-master-key` re-seals the store under the key in HOOKRELAY_NEW_MASTER_KEY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_is_required_and_rotates() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = env.config_toml_file(&dir);
    let cfg = cfg.to_str().unwrap().to_owned();
    let five_bytes = "AAECAwQ=";
    // (what, key or None for unset, text the error must contain)
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("unset", None, "HOOKRELAY_MASTER_KEY`: is not set"),
        ("empty", Some(""), "is empty"),
        ("not base64", Some("not-base64!!"), "is not base64"),
        ("5 bytes", Some(five_bytes), "got 5"),
    ];
    for (what, key, needle) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config", &cfg])
            .env_remove("HOOKRELAY_MASTER_KEY")
            .env("RUST_LOG", "warn");
        if let Some(key) = key {
            cmd.env("HOOKRELAY_MASTER_KEY", key);
        }
        let out = cmd.output().expect("run hookrelay");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{what}: {err}");
        assert!(err.contains(needle), "{what}: expected {needle:?} in {err}");
        assert!(err.contains("HOOKRELAY_MASTER_KEY"), "{what}: {err}");
        assert!(
            err.contains("environment variable `HOOKRELAY_MASTER_KEY`"),
            "{what}: a variable, not a config key: {err}"
        );
        if let Some(key) = key.filter(|k| k.len() > 3) {
            assert!(!err.contains(key), "{what}: the value was printed: {err}");
        }
    }

    let (code, out, err) = hookrelay(&["migrate", "--config", &cfg], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = hookrelay(&["rotate-master-key", "--config", &cfg], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("HOOKRELAY_NEW_MASTER_KEY is not set"), "{err}");
    let new = hookrelay_core::sealing::MasterKey::generate_base64();
    let new_id = hookrelay_core::sealing::MasterKey::from_base64(&new)
        .unwrap()
        .id()
        .to_owned();
    let (code, out, err) = hookrelay(
        &["rotate-master-key", "--config", &cfg],
        &[("HOOKRELAY_NEW_MASTER_KEY", &new)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&new_id) && !out.contains(&new), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--help` says what a newcomer needs: the master key for `run`, the exit codes of
/// `check`, and that `demo` reads no config.
#[test]
fn help_names_the_master_key_the_exit_codes_and_what_demo_reads() {
    for (command, needles) in [
        (
            "run",
            &["HOOKRELAY_MASTER_KEY", "openssl rand -base64 32"][..],
        ),
        (
            "check",
            &["Exit codes", "0 everything is ready", "2 the config"][..],
        ),
        ("demo", &["Needs no config file"][..]),
    ] {
        let (code, out, err) = hookrelay(&[command, "--help"], &[]);
        assert_eq!(code, 0, "{command}: {err}");
        for needle in needles {
            assert!(
                out.contains(needle),
                "{command} --help lacks {needle:?}:\n{out}"
            );
        }
    }
}

/// `rotate-master-key` refuses while a hookrelay process uses the store (it would be
/// left with a key that opens nothing), naming the process, and changes nothing; once
/// the process has stopped it rotates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_refuses_while_hookrelay_runs() {
    let env = Env::new().await;
    let dir = std::env::temp_dir().join(format!("hookrelay-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = env.config_toml_file(&dir);
    let cfg = cfg.to_str().unwrap().to_owned();
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let sub = api
        .subscribe("http://127.0.0.1:9/hook", serde_json::json!({}))
        .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let new = hookrelay_core::sealing::MasterKey::generate_base64();
    let new_id = hookrelay_core::sealing::MasterKey::from_base64(&new)
        .unwrap()
        .id()
        .to_owned();
    let sealed_under = || async {
        let row = env
            .store
            .connect()
            .await
            .query_one(
                "select secret from hookrelay.subscriptions where id = $1",
                &[&id],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };

    let rotate = || {
        hookrelay(
            &["rotate-master-key", "--config", &cfg],
            &[("HOOKRELAY_NEW_MASTER_KEY", &new)],
        )
    };
    let (code, out, err) = rotate();
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("still using this store"), "{err}");
    assert!(
        err.contains(&hookrelay_store::process_name()),
        "names the running process: {err}"
    );
    assert!(
        !sealed_under().await.contains(&new_id),
        "nothing was rotated"
    );

    relay.shutdown().await;
    // The process's presence ends with its connection, which the server notices at
    // once; a delivery leased meanwhile would hold the rotation off for its lease.
    let out = eventually(
        "the rotation once hookrelay stopped",
        std::time::Duration::from_secs(30),
        || {
            let (code, out, err) = rotate();
            async move {
                (code == 0).then_some(out).or_else(|| {
                    eprintln!("{err}");
                    None
                })
            }
        },
    )
    .await;
    assert!(out.contains(&new_id), "{out}");
    assert!(sealed_under().await.contains(&new_id));
    let _ = std::fs::remove_dir_all(&dir);
}
