//! `deploy/` checked without a container engine: every TOML config loads with
//! hookrelay's own loader (the Kubernetes ConfigMap with its Secret layered over it,
//! as the pod's environment does); compose and Kubernetes YAML parse and hold what
//! they promise (MySQL binlog flags, a MongoDB replica set, 2 replicas on one store,
//! the probes, the master key); every file they mount exists; the Dockerfile builds a
//! package and binary the workspace has; the systemd unit runs a real subcommand.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use hookrelay_core::Config;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml_docs(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_toml_config_under_deploy_loads() {
    let mut tomls = Vec::new();
    files_under(&deploy(), "toml", &mut tomls);
    assert!(
        tomls.len() >= 2,
        "expected deploy/hookrelay.toml and deploy/compose/hookrelay.toml: {tomls:?}"
    );
    for path in tomls {
        if let Err(e) = Config::load(Some(&path)) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn compose_wires_the_databases_hookrelay_and_the_receiver() {
    let dir = deploy();
    let doc = &yaml_docs(&dir.join("compose.yaml"))[0];
    let services = &doc["services"];
    for name in [
        "postgres",
        "mysql",
        "mongodb",
        "mongodb-init",
        "hookrelay",
        "receiver",
    ] {
        assert!(
            !services[name].is_badvalue(),
            "compose.yaml has no service {name}"
        );
    }
    let mysql = strings(&services["mysql"]["command"]);
    for flag in [
        "--log-bin",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
    ] {
        assert!(
            mysql.iter().any(|a| a == flag),
            "mysql command lacks {flag}: {mysql:?}"
        );
    }
    assert!(
        services["mysql"]["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("mysql:8"),
        "MySQL 8"
    );
    let mongo = strings(&services["mongodb"]["command"]).join(" ");
    assert!(mongo.contains("--replSet rs0"), "mongodb command: {mongo}");
    let init = strings(&services["mongodb-init"]["command"]).join(" ");
    assert!(
        init.contains("rs.initiate") && init.contains("rs0"),
        "mongodb-init: {init}"
    );

    // Every bind mount names a file in the repository.
    let mut mounts = Vec::new();
    for (name, service) in services.as_hash().expect("services") {
        for volume in strings(&service["volumes"]) {
            let (host, target) = volume.split_once(':').expect("host:container");
            let host = dir.join(host);
            assert!(
                host.is_file(),
                "{name:?} mounts {} which does not exist",
                host.display()
            );
            mounts.push((
                name.as_str().unwrap_or_default().to_owned(),
                host,
                target.to_owned(),
            ));
        }
    }

    // hookrelay: built by deploy/Dockerfile, its mounted config loads, the master key is set.
    let hookrelay = &services["hookrelay"];
    let context = dir.join(
        hookrelay["build"]["context"]
            .as_str()
            .expect("build context"),
    );
    let dockerfile = hookrelay["build"]["dockerfile"]
        .as_str()
        .expect("dockerfile");
    assert!(
        context.join(dockerfile).is_file(),
        "{dockerfile} not under the build context"
    );
    let env = &hookrelay["environment"];
    let config_at = env["HOOKRELAY_CONFIG"].as_str().expect("HOOKRELAY_CONFIG");
    let (_, config, _) = mounts
        .iter()
        .find(|(s, _, target)| s == "hookrelay" && target.trim_end_matches(":ro") == config_at)
        .expect("hookrelay's HOOKRELAY_CONFIG is a mounted file");
    let cfg = Config::load(Some(config)).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    assert!(
        env["HOOKRELAY_MASTER_KEY"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "hookrelay's environment sets HOOKRELAY_MASTER_KEY"
    );
    // The config reaches the databases by their service names.
    let kinds: Vec<(&str, &str)> = cfg
        .sources
        .iter()
        .map(|s| (s.kind.as_str(), s.url.as_str()))
        .collect();
    for (kind, host) in [
        ("postgres", "@postgres:"),
        ("mysql", "@mysql:"),
        ("mongodb", "//mongodb:"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(k, url)| *k == kind && url.contains(host)),
            "a {kind} source at service {host}: {kinds:?}"
        );
    }
    assert!(cfg.store.url.contains("@postgres:"), "{}", cfg.store.url);
    let subnet = doc["networks"]["default"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("compose network subnet");
    assert!(
        cfg.dispatch
            .allow_networks
            .iter()
            .any(|n| n.to_string() == subnet),
        "dispatch.allow_networks lets hookrelay reach the receiver on {subnet}"
    );

    // The receiver is the Python example, with the secret the README's curl subscribes with.
    assert!(
        mounts.iter().any(|(s, host, _)| s == "receiver"
            && host.ends_with("examples/receivers/python/receiver.py")),
        "the receiver service runs examples/receivers/python/receiver.py"
    );
    let secret = services["receiver"]["environment"]["WEBHOOK_SECRET"]
        .as_str()
        .expect("WEBHOOK_SECRET");
    assert!(read(&dir.join("compose.yaml")).contains(&format!("\"secret\": \"{secret}\"")));
}

/// What the pod's environment does to the ConfigMap's file: each
/// `HOOKRELAY_<SECTION>__<KEY>` of the Secret set in `[section]` (a TOML value, or a string).
fn layer_env(toml: &str, vars: &[(String, String)]) -> String {
    let mut text = toml.to_owned();
    for (name, value) in vars {
        let Some((section, key)) = name
            .strip_prefix("HOOKRELAY_")
            .and_then(|k| k.split_once("__"))
        else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let header = format!("[{section}]\n");
        let at = text
            .find(&header)
            .unwrap_or_else(|| panic!("the ConfigMap has no [{section}] for {name}"))
            + header.len();
        let value = if value.starts_with('[') || value.parse::<f64>().is_ok() {
            value.clone()
        } else {
            format!("{value:?}")
        };
        text.insert_str(at, &format!("{key} = {value}\n"));
    }
    text
}

#[test]
fn kubernetes_manifests_run_two_replicas_on_one_store_with_probes_and_secrets() {
    let dir = deploy().join("k8s");
    let kustomization = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let mut by_kind = std::collections::BTreeMap::new();
    for file in strings(&kustomization["resources"]) {
        for doc in yaml_docs(&dir.join(&file)) {
            let kind = doc["kind"].as_str().expect("kind").to_owned();
            by_kind.insert(kind, doc);
        }
    }
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
    ] {
        assert!(
            by_kind.contains_key(kind),
            "deploy/k8s has no {kind}: {:?}",
            by_kind.keys()
        );
    }
    let deployment = &by_kind["Deployment"];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace");

    let config_map = &by_kind["ConfigMap"];
    let secret = &by_kind["Secret"];
    let name = |y: &Yaml| {
        y["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        Some(name(secret).as_str())
    );
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"].as_str(),
        Some(name(config_map).as_str())
    );
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mount");
    let config_at = container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("HOOKRELAY_CONFIG"))
        .and_then(|e| e["value"].as_str())
        .expect("HOOKRELAY_CONFIG");
    let file = config_at
        .strip_prefix(&format!("{mount}/"))
        .expect("HOOKRELAY_CONFIG is in the mounted ConfigMap");
    let toml = config_map["data"][file]
        .as_str()
        .expect("the config file in the ConfigMap");

    let vars: Vec<(String, String)> = secret["stringData"]
        .as_hash()
        .expect("stringData")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for key in [
        "HOOKRELAY_MASTER_KEY",
        "HOOKRELAY_API__TOKENS",
        "HOOKRELAY_STORE__URL",
    ] {
        assert!(vars.iter().any(|(k, _)| k == key), "the Secret holds {key}");
    }
    let cfg = Config::from_toml(&layer_env(toml, &vars))
        .unwrap_or_else(|e| panic!("ConfigMap + Secret: {e}"));
    assert!(
        (grace as u64) > cfg.dispatch.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed dispatch.shutdown_grace"
    );
    assert!(
        cfg.api.listen.ip().is_unspecified(),
        "the API listens beyond the pod's loopback"
    );
    let port = container["ports"][0]["containerPort"]
        .as_i64()
        .expect("containerPort");
    assert_eq!(port, i64::from(cfg.api.listen.port()));
    // Both probes use api.health_listen's port, not the admin port a flood can fill.
    let health = cfg
        .api
        .health_listen
        .expect("the ConfigMap sets api.health_listen");
    assert!(health.ip().is_unspecified(), "the kubelet reaches {health}");
    for probe in ["readinessProbe", "livenessProbe"] {
        let named = container[probe]["httpGet"]["port"]
            .as_str()
            .expect("a named probe port");
        let number = container["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(named))
            .and_then(|p| p["containerPort"].as_i64());
        assert_eq!(number, Some(i64::from(health.port())), "{probe}");
    }

    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(by_kind["Service"]["spec"]["selector"], *labels);
    assert_eq!(
        by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *labels
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"],
        *labels
    );
}

/// `cargo metadata` for the workspace: (package, its binary targets).
fn workspace_binaries() -> Vec<(String, Vec<String>)> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "bin"))
                })
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect();
            (p["name"].as_str().expect("name").to_owned(), bins)
        })
        .collect()
}

#[test]
fn dockerfile_builds_a_package_and_binary_the_workspace_has() {
    let text = read(&deploy().join("Dockerfile"));
    // Continuation lines joined: one instruction per line.
    let instructions: Vec<String> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let from = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(from >= 2, "multi-stage: {from} FROM");

    let build = instructions
        .iter()
        .find(|l| l.starts_with("RUN") && l.contains("cargo build"))
        .expect("a RUN cargo build");
    let words: Vec<&str> = build.split_whitespace().collect();
    assert!(
        words.contains(&"--release") && words.contains(&"--locked"),
        "{build}"
    );
    let package = words
        .windows(2)
        .find(|w| w[0] == "-p" || w[0] == "--package")
        .map(|w| w[1])
        .expect("cargo build -p <package>");
    let packages = workspace_binaries();
    let (_, bins) = packages
        .iter()
        .find(|(name, _)| name == package)
        .unwrap_or_else(|| panic!("the Dockerfile builds -p {package}, not in the workspace"));
    assert_eq!(bins, &["hookrelay".to_owned()], "{package}'s binaries");
    assert!(
        build.contains("target/release/hookrelay"),
        "the build step takes target/release/hookrelay: {build}"
    );

    // The final stage: the binary from the builder, a non-root user, the probes, the command.
    let last_from = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .unwrap();
    let last = &instructions[last_from..];
    let has = |prefix: &str, needle: &str| {
        last.iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    };
    assert!(has("COPY --from=builder", "hookrelay"), "{last:?}");
    let user = last
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the final stage");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "USER {user}"
    );
    assert!(has("HEALTHCHECK", "/healthz"), "{last:?}");
    assert!(
        last.iter().any(|l| l == r#"ENTRYPOINT ["hookrelay"]"#),
        "{last:?}"
    );
    assert!(last.iter().any(|l| l == r#"CMD ["run"]"#), "{last:?}");
    for copy in instructions
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let src = copy.split_whitespace().nth(1).expect("COPY src");
        assert!(
            root().join(src).exists(),
            "{copy}: {src} is not in the repository"
        );
    }
}

#[test]
fn systemd_unit_runs_hookrelay_with_a_config_that_loads() {
    let unit = read(&deploy().join("hookrelay.service"));
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.lines().any(|l| l == section), "the unit has {section}");
    }
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit sets {key}"))
    };
    let exec: Vec<&str> = value("ExecStart").split_whitespace().collect();
    assert!(exec[0].ends_with("/hookrelay"), "{exec:?}");
    assert_eq!(exec[1], "run", "{exec:?}");
    let flag = exec[2];
    let help = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("hookrelay run --help");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains(flag),
        "`hookrelay run` has no {flag}"
    );
    let stop: u64 = value("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > Config::from_toml(
            "[store]\nurl = \"postgres://x/y\"\n[api]\ntokens = [\"12345678\"]\n"
        )
        .unwrap()
        .dispatch
        .shutdown_grace
        .as_secs()
    );
}
