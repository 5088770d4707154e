//! The files under `deploy/`: they parse, they agree with each other and with the code, and
//! the tools that can judge them here (systemd-analyze, promtool, kubectl kustomize) do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cemwatch_coordinator::config::Config;
use cemwatch_tests::process::http_get;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::paths::{deploy, read, repo};
use crate::support::tools::{tool, REQUIRE_PROMETHEUS, REQUIRE_SYSTEMD};
use crate::support::{probe_bin, start_coordinator, COORDINATOR};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn extension(path: &Path) -> &str {
    path.extension().and_then(|e| e.to_str()).unwrap_or("")
}

fn yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
}

fn yaml1(path: &Path) -> Yaml {
    let mut docs = yaml(path);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

fn s<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
}

fn list<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {y:?}"))
}

fn strings(y: &Yaml, what: &str) -> Vec<String> {
    list(y, what)
        .iter()
        .map(|v| s(v, what).to_string())
        .collect()
}

fn int(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected a number, found {y:?}"))
}

fn config(text: &str, origin: &str) -> Config {
    Config::from_toml(text, origin, Path::new("/"))
        .unwrap_or_else(|e| panic!("{origin}: the example configuration is refused:\n{e}"))
}

/// The secrets `deploy/compose/init-secrets` makes (with this build's `cemwatch` for the
/// bcrypt hash), in a temporary directory. Run twice: the second run keeps every file.
pub(super) fn init_secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        let out = Command::new(deploy().join("compose").join("init-secrets"))
            .arg(dir.path())
            .env("CEMWATCH", COORDINATOR)
            .output()
            .expect("run init-secrets");
        assert!(
            out.status.success(),
            "init-secrets: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run();
    assert!(first.contains("made in"), "{first}");
    let before: Vec<String> = ["prometheus-token", "operator-token", "prometheus-web.yml"]
        .iter()
        .map(|f| read(&dir.path().join(f)))
        .collect();
    let second = run();
    assert!(second.contains("nothing changed"), "{second}");
    for (i, f) in ["prometheus-token", "operator-token", "prometheus-web.yml"]
        .iter()
        .enumerate()
    {
        assert_eq!(read(&dir.path().join(f)), before[i], "{f} kept");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path())
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the secrets directory is its owner's only");
    dir
}

/// `text` with the secrets' mount point (`from`, ending in /) moved to `secrets`.
pub(super) fn secrets_at(text: &str, from: &str, secrets: &Path) -> String {
    text.replace(from, &format!("{}/", secrets.display()))
}

/// The user of `config` whose token is the one in `file`.
fn user_with_token<'a>(
    config: &'a Config,
    file: &Path,
) -> &'a cemwatch_coordinator::config::http::HttpUser {
    let digest = cemwatch_coordinator::http::auth::token_digest(read(file).trim());
    config
        .http
        .users
        .iter()
        .find(|u| u.token_sha256 == Some(digest))
        .unwrap_or_else(|| panic!("no [[http.user]] has the token in {}", file.display()))
}

/// What `--flag VALUE` is in an argument list.
fn arg_after(args: &[String], flag: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("no {flag} VALUE in {args:?}"))
        .clone()
}

#[test]
fn every_yaml_and_json_file_parses() {
    // The parser refuses what a careless edit makes, so this test can fail.
    for broken in ["a: 1\na: 2\n", "a: 1\n b: 2\n", "a: [1\n"] {
        assert!(YamlLoader::load_from_str(broken).is_err(), "{broken:?}");
    }
    let mut files = Vec::new();
    walk(&deploy(), &mut files);
    let in_deploy = files.len();
    // The compose stack provisions dashboards/ into Grafana and Prometheus: it must parse too.
    walk(&repo().join("dashboards"), &mut files);
    let (mut yamls, mut jsons) = (0, 0);
    for (i, path) in files.iter().enumerate() {
        match extension(path) {
            "yaml" | "yml" => {
                let docs = yaml(path);
                if i < in_deploy {
                    assert!(
                        !docs.is_empty() && docs.iter().all(|d| d.as_hash().is_some()),
                        "{}: every document is a mapping",
                        path.display()
                    );
                }
                yamls += 1;
            }
            "json" => {
                serde_json::from_str::<serde_json::Value>(&read(path))
                    .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()));
                jsons += 1;
            }
            _ => {}
        }
    }
    println!("deploy/ and dashboards/: {yamls} YAML and {jsons} JSON files parse");
    assert!(yamls >= 10, "the YAML files were found: {yamls}");
}

/// `Key=value` lines of a unit file, in order (comments skipped).
fn unit(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn unit_value(unit: &[(String, String)], key: &str) -> String {
    unit.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("CapabilityBoundingSet", ""),
    ("SystemCallFilter", "@system-service"),
    ("RestrictNamespaces", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
];

#[test]
fn systemd_units_agree_with_the_configuration_and_are_hardened() {
    let dir = deploy().join("systemd");
    let users = read(&dir.join("cemwatch.sysusers"));
    let declared: Vec<&str> = users
        .lines()
        .filter(|l| l.starts_with("u "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    for (file, binary, state_flag) in [
        ("cemwatch.service", "/usr/local/bin/cemwatch", "--config"),
        (
            "cemwatch-probe.service",
            "/usr/local/bin/cemwatch-probe",
            "--state-dir",
        ),
    ] {
        let u = unit(&read(&dir.join(file)));
        for (key, value) in HARDENING {
            assert!(
                u.iter().any(|(k, v)| k == key && v == value),
                "{file}: {key}={value}"
            );
        }
        let user = unit_value(&u, "User");
        assert!(
            declared.contains(&user.as_str()),
            "{file}: User={user} is declared in cemwatch.sysusers"
        );
        let exec: Vec<String> = unit_value(&u, "ExecStart")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(exec[0], binary, "{file}");
        let state = format!("/var/lib/{}", unit_value(&u, "StateDirectory"));
        if file == "cemwatch.service" {
            let path = arg_after(&exec, state_flag);
            assert_eq!(
                Path::new(&path).parent(),
                Some(
                    Path::new("/etc")
                        .join(unit_value(&u, "ConfigurationDirectory"))
                        .as_path()
                ),
                "{file}: the configuration is in its ConfigurationDirectory"
            );
            let c = config(
                &read(&dir.join("cemwatch.toml")),
                "deploy/systemd/cemwatch.toml",
            );
            assert_eq!(
                c.server.data_dir,
                PathBuf::from(&state),
                "{file}: data_dir is the StateDirectory, the only writable path"
            );
            assert_eq!(unit_value(&u, "ExecReload"), "/bin/kill -HUP $MAINPID");
            assert_eq!(
                unit_value(&u, "RestartPreventExitStatus"),
                cemwatch_coordinator::config::EXIT_CONFIG.to_string(),
                "{file}: a refused configuration is not restarted in a loop"
            );
        } else {
            assert_eq!(arg_after(&exec, state_flag), state, "{file}");
        }
    }
}

/// The units with ExecStart pointing at the binaries this test run built (verify checks that
/// the executable exists), in a temporary directory.
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let coordinator = Path::new(COORDINATOR).to_path_buf();
    let probe = probe_bin();
    ["cemwatch.service", "cemwatch-probe.service"]
        .iter()
        .map(|name| {
            let text = read(&deploy().join("systemd").join(name))
                .replace(
                    "/usr/local/bin/cemwatch-probe ",
                    &format!("{} ", probe.display()),
                )
                .replace(
                    "/usr/local/bin/cemwatch ",
                    &format!("{} ", coordinator.display()),
                );
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write unit");
            path
        })
        .collect()
}

/// Runs `systemd-analyze ARGS`; returns (success, everything it printed).
fn analyze(tool: &Path, args: &[&str], units: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .args(units)
        .output()
        .expect("systemd-analyze");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn systemd_analyze_verifies_the_units_and_rates_them_hardened() {
    let test = "systemd_analyze_verifies_the_units_and_rates_them_hardened";
    let Some(sa) = tool(
        "systemd-analyze",
        test,
        REQUIRE_SYSTEMD,
        "apt-get install systemd",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let units = units_for_verify(tmp.path());

    // verify exits 0 on unknown keys and bad values, printing a warning: any output fails.
    let (ok, printed) = analyze(&sa, &["verify", "--man=no"], &units);
    assert!(
        ok && printed.trim().is_empty(),
        "systemd-analyze verify:\n{printed}"
    );
    // The same check on a broken copy does fail, so the one above means something.
    let broken = tmp.path().join("broken.service");
    std::fs::write(
        &broken,
        read(&units[0]).replace("ProtectSystem=strict", "ProtectSystem=sometimes"),
    )
    .expect("write");
    let (_, printed_broken) = analyze(&sa, &["verify", "--man=no"], &[broken]);
    assert!(
        printed_broken.contains("broken.service:") && printed_broken.contains("sometimes"),
        "a bad value is reported: {printed_broken:?}"
    );

    // The users the units run as: systemd-sysusers would create both (dry run, in a scratch
    // root; it reads the file on standard input).
    if let Some(sysusers) = tool(
        "systemd-sysusers",
        test,
        REQUIRE_SYSTEMD,
        "apt-get install systemd",
    ) {
        std::fs::create_dir_all(tmp.path().join("root/etc")).expect("mkdir");
        let out = Command::new(sysusers)
            .arg(format!("--root={}", tmp.path().join("root").display()))
            .args(["--dry-run", "-"])
            .stdin(std::fs::File::open(deploy().join("systemd/cemwatch.sysusers")).expect("open"))
            .output()
            .expect("systemd-sysusers");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "systemd-sysusers:\n{printed}");
        for user in ["cemwatch", "cemwatch-probe"] {
            assert!(
                printed.contains(&format!("Creating user '{user}'")),
                "{printed}"
            );
        }
    }

    // systemd's own exposure rating, 0 (locked down) to 10 (unprotected): at most 2.0.
    for u in &units {
        let (ok, printed) = analyze(
            &sa,
            &["security", "--offline=yes", "--threshold=20"],
            std::slice::from_ref(u),
        );
        let rating = printed
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no rating")
            .trim()
            .to_string();
        println!("systemd-analyze security: {rating}");
        assert!(ok, "{}: exposure above 2.0:\n{printed}", u.display());
    }
}

/// A compose service by name.
fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let svc = &compose["services"][name];
    assert!(svc.as_hash().is_some(), "compose.yaml: no service {name}");
    svc
}

/// `SRC:DST[:MODE]` volumes of a compose service, as (source, target).
fn volumes(svc: &Yaml, what: &str) -> Vec<(String, String)> {
    strings(&svc["volumes"], what)
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (parts[0].to_string(), parts[1].to_string())
        })
        .collect()
}

/// `[IP:]HOST:CONTAINER[/PROTO]` ports of a compose service, as (host IP, container port, protocol).
fn ports(svc: &Yaml, what: &str) -> Vec<(String, u16, String)> {
    strings(&svc["ports"], what)
        .iter()
        .map(|p| {
            let (spec, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let parts: Vec<&str> = spec.split(':').collect();
            let container = parts
                .last()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("{what}: bad port {p:?}"));
            let ip = if parts.len() == 3 {
                parts[0]
            } else {
                "0.0.0.0"
            };
            (ip.to_string(), container, proto.to_string())
        })
        .collect()
}

#[test]
fn the_compose_stack_agrees_with_itself_and_the_code() {
    let dir = deploy().join("compose");
    let compose = yaml1(&dir.join("compose.yaml"));

    // The coordinator: its configuration, where it is mounted, its ports and data volume.
    let coord = service(&compose, "coordinator");
    let command = strings(&coord["command"], "coordinator.command");
    let config_path = arg_after(&command, "--config");
    let vols = volumes(coord, "coordinator.volumes");
    let (source, _) = vols
        .iter()
        .find(|(_, t)| *t == config_path)
        .unwrap_or_else(|| panic!("the configuration {config_path} is mounted: {vols:?}"));
    let secrets = init_secrets();
    let c = config(
        &secrets_at(&read(&dir.join(source)), "/run/secrets/", secrets.path()),
        "deploy/compose/cemwatch.toml",
    );
    assert_eq!(
        c.http.loopback_role, None,
        "in a container nothing comes from loopback: loopback_role = \"none\""
    );

    // Secrets: every one a service uses is declared, made by init-secrets, and mounted where
    // its consumer reads it.
    let declared = compose["secrets"].as_hash().expect("top-level secrets");
    for (name, decl) in declared {
        let name = s(name, "secret");
        let file = s(&decl["file"], "secrets.file");
        assert_eq!(file, format!("./secrets/{name}"), "{name}");
        assert!(
            secrets.path().join(name).is_file(),
            "init-secrets makes {name}"
        );
    }
    let uses = |svc: &str| -> Vec<String> {
        let list = strings(&service(&compose, svc)["secrets"], "service secrets");
        for n in &list {
            assert!(
                declared.contains_key(&Yaml::String(n.clone())),
                "{svc}: {n} declared"
            );
        }
        list
    };
    let coordinator_secrets = uses("coordinator");
    let operator = user_with_token(&c, &secrets.path().join("operator-token"));
    assert_eq!(operator.role.as_str(), "operate");
    assert!(coordinator_secrets.contains(&"operator-token".to_string()));
    assert!(
        vols.iter()
            .any(|(_, t)| Path::new(t) == c.server.data_dir.as_path()),
        "data_dir {} is a volume: {vols:?}",
        c.server.data_dir.display()
    );
    let published = ports(coord, "coordinator.ports");
    assert!(
        published.contains(&("0.0.0.0".into(), c.server.quic_listen.port(), "udp".into())),
        "QUIC is published for probes everywhere: {published:?}"
    );
    assert!(
        published.contains(&(
            "127.0.0.1".into(),
            c.server.http_listen.port(),
            "tcp".into()
        )),
        "HTTP is published on the host's loopback only: {published:?}"
    );
    assert!(
        c.server.http_listen.ip().is_unspecified(),
        "Prometheus reaches the coordinator over the compose network"
    );
    for (name, file) in [
        ("coordinator", "coordinator.Containerfile"),
        ("probe", "probe.Containerfile"),
    ] {
        let build = &service(&compose, name)["build"];
        let context = dir.join(s(&build["context"], "build.context"));
        assert!(
            context.join("Cargo.toml").exists(),
            "{name}: the build context is the workspace"
        );
        let dockerfile = s(&build["dockerfile"], "build.dockerfile");
        assert!(
            context.join(dockerfile).exists() && dockerfile.ends_with(file),
            "{name}: {dockerfile}"
        );
    }

    // Prometheus: its configuration scrapes the coordinator; its rule files are mounted.
    let prom = service(&compose, "prometheus");
    let args = strings(&prom["command"], "prometheus.command");
    let prom_config = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let prom_vols = volumes(prom, "prometheus.volumes");
    let (source, _) = prom_vols
        .iter()
        .find(|(_, t)| t == prom_config)
        .expect("prometheus.yml is mounted");
    let p = yaml1(&dir.join(source));
    let scrape = &list(&p["scrape_configs"], "scrape_configs")[0];
    assert_eq!(s(&scrape["metrics_path"], "metrics_path"), "/metrics");
    let targets = strings(
        &list(&scrape["static_configs"], "static_configs")[0]["targets"],
        "targets",
    );
    assert_eq!(
        targets,
        vec![format!("coordinator:{}", c.server.http_listen.port())]
    );
    assert_eq!(
        s(&scrape["authorization"]["type"], "authorization.type"),
        "Bearer"
    );
    let credentials = s(
        &scrape["authorization"]["credentials_file"],
        "authorization.credentials_file",
    );
    let token = credentials
        .strip_prefix("/run/secrets/")
        .expect("a compose secret");
    assert!(
        uses("prometheus").contains(&token.to_string())
            && coordinator_secrets.contains(&token.to_string()),
        "Prometheus and the coordinator both mount {token}"
    );
    let scraper = user_with_token(&c, &secrets.path().join(token));
    assert_eq!(
        scraper.role.as_str(),
        "metrics",
        "Prometheus may scrape only"
    );
    let web = args
        .iter()
        .find_map(|a| a.strip_prefix("--web.config.file=/run/secrets/"))
        .expect("Prometheus asks for credentials (--web.config.file)");
    assert!(uses("prometheus").contains(&web.to_string()));
    assert!(
        !args.iter().any(|a| a == "--web.enable-lifecycle"),
        "no /-/quit for whoever holds a password"
    );
    let mut fleet_rules = 0;
    for glob in strings(&p["rule_files"], "rule_files") {
        let (parent, pattern) = glob.rsplit_once('/').expect("absolute glob");
        assert_eq!(pattern, "*.rules.yml", "{glob}");
        let (source, _) = prom_vols
            .iter()
            .find(|(_, t)| t == parent)
            .unwrap_or_else(|| panic!("{parent} (rule_files) is mounted: {prom_vols:?}"));
        let source = dir.join(source);
        assert!(source.is_dir(), "{}", source.display());
        let mut files = Vec::new();
        walk(&source, &mut files);
        if parent.ends_with("/cemwatch") {
            fleet_rules = files
                .iter()
                .filter(|f| f.to_string_lossy().ends_with(".rules.yml"))
                .count();
        }
    }
    assert!(fleet_rules >= 1, "the fleet recording rules are loaded");

    // Grafana: provisioning mounted; the data source is the stack's Prometheus; the dashboard
    // provider reads the mounted dashboards/ folder.
    let graf = service(&compose, "grafana");
    let graf_vols = volumes(graf, "grafana.volumes");
    let (prov, _) = graf_vols
        .iter()
        .find(|(_, t)| t == "/etc/grafana/provisioning")
        .expect("provisioning mounted");
    let prov = dir.join(prov);
    let ds = yaml1(&prov.join("datasources").join("prometheus.yaml"));
    let ds = &list(&ds["datasources"], "datasources")[0];
    assert_eq!(s(&ds["type"], "type"), "prometheus");
    let url = s(&ds["url"], "url");
    assert_eq!(url, "http://prometheus:9090", "the prometheus service");
    assert_eq!(
        ds["basicAuth"].as_bool(),
        Some(true),
        "Grafana authenticates"
    );
    let user = s(&ds["basicAuthUser"], "basicAuthUser");
    let password = s(
        &ds["secureJsonData"]["basicAuthPassword"],
        "secureJsonData.basicAuthPassword",
    );
    let password = password
        .strip_prefix("$__file{/run/secrets/")
        .and_then(|p| p.strip_suffix('}'))
        .expect("the password from a mounted secret");
    let graf_secrets = uses("grafana");
    assert!(graf_secrets.contains(&password.to_string()));
    let web_yml = yaml1(&secrets.path().join(web));
    let hash = s(&web_yml["basic_auth_users"][user], "basic_auth_users");
    assert!(
        bcrypt::verify(read(&secrets.path().join(password)).trim(), hash).expect("bcrypt"),
        "Prometheus' web configuration admits Grafana's password"
    );
    let admin = s(
        &graf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"],
        "GF_SECURITY_ADMIN_PASSWORD__FILE",
    );
    assert!(graf_secrets.contains(&admin.trim_start_matches("/run/secrets/").to_string()));
    let dash = yaml1(&prov.join("dashboards").join("cemwatch.yaml"));
    let provider = &list(&dash["providers"], "providers")[0];
    let path = s(&provider["options"]["path"], "options.path");
    let (source, _) = graf_vols
        .iter()
        .find(|(_, t)| t == path)
        .unwrap_or_else(|| panic!("the provider's path {path} is mounted: {graf_vols:?}"));
    assert_eq!(
        dir.join(source).canonicalize().expect("dashboards/"),
        repo()
            .join("dashboards")
            .canonicalize()
            .expect("dashboards/"),
        "the repository's dashboards/ is provisioned"
    );
}

/// Kubernetes documents by `Kind/name`.
fn kube_docs() -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let mut files = Vec::new();
    walk(&deploy().join("kubernetes"), &mut files);
    for path in files.iter().filter(|p| extension(p) == "yaml") {
        for doc in yaml(path) {
            let kind = s(&doc["kind"], "kind").to_string();
            assert!(
                doc["apiVersion"].as_str().is_some(),
                "{}: apiVersion",
                path.display()
            );
            if kind == "Kustomization" {
                out.insert(kind, doc);
                continue;
            }
            let name = s(&doc["metadata"]["name"], "metadata.name").to_string();
            out.insert(format!("{kind}/{name}"), doc);
        }
    }
    out
}

fn labels_match(selector: &Yaml, labels: &Yaml) -> bool {
    selector
        .as_hash()
        .is_some_and(|sel| sel.iter().all(|(k, v)| labels[s(k, "label")] == *v))
}

#[test]
fn the_kubernetes_manifests_agree_with_the_configuration() {
    let dir = deploy().join("kubernetes");
    let docs = kube_docs();
    let get = |key: &str| {
        docs.get(key)
            .unwrap_or_else(|| panic!("no {key} in deploy/kubernetes"))
    };

    // kustomization.yaml lists every manifest but the optional ServiceMonitor.
    let resources = strings(&get("Kustomization")["resources"], "resources");
    let mut manifests: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml" && n != "servicemonitor.yaml")
        .collect();
    manifests.sort();
    let mut listed = resources.clone();
    listed.sort();
    assert_eq!(listed, manifests, "kustomization.yaml resources");

    let cm = get("ConfigMap/cemwatch-config");
    let secrets = init_secrets();
    let c = config(
        &secrets_at(
            s(&cm["data"]["cemwatch.toml"], "data"),
            "/etc/cemwatch-secrets/",
            secrets.path(),
        ),
        "deploy/kubernetes/configmap.yaml",
    );
    assert_eq!(c.http.loopback_role, None, "loopback_role = \"none\"");
    let sts = get("StatefulSet/cemwatch");
    let pod = &sts["spec"]["template"];
    let container = &list(&pod["spec"]["containers"], "containers")[0];
    let image = s(&container["image"], "image");
    let images = list(&get("Kustomization")["images"], "images");
    assert!(
        images.iter().any(|i| i["name"].as_str() == Some(image)),
        "kustomization.yaml sets the image {image}"
    );
    let args = strings(&container["args"], "args");
    let config_path = PathBuf::from(arg_after(&args, "--config"));

    // Container ports are the configuration's listeners, by name.
    let mut named = BTreeMap::new();
    for p in list(&container["ports"], "ports") {
        named.insert(
            s(&p["name"], "port name").to_string(),
            (
                int(&p["containerPort"], "containerPort") as u16,
                s(&p["protocol"], "protocol").to_string(),
            ),
        );
    }
    assert_eq!(named["quic"], (c.server.quic_listen.port(), "UDP".into()));
    assert_eq!(named["http"], (c.server.http_listen.port(), "TCP".into()));
    assert!(
        c.server.http_listen.ip().is_unspecified() && c.server.quic_listen.ip().is_unspecified()
    );

    // Volumes: the ConfigMap holds the file --config names; data_dir is the claim template.
    let mounts: BTreeMap<String, String> = list(&container["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            (
                s(&m["name"], "name").to_string(),
                s(&m["mountPath"], "mountPath").to_string(),
            )
        })
        .collect();
    let config_volume = list(&pod["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("cemwatch-config"))
        .expect("a volume from the ConfigMap");
    assert_eq!(
        Path::new(&mounts[s(&config_volume["name"], "name")]),
        config_path.parent().expect("dir")
    );
    assert!(cm["data"][config_path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("name")]
    .as_str()
    .is_some());
    // The HTTP tokens: the Secret cemwatch-http, mounted where the users' token_file point,
    // not optional; the metrics user's token is the key the ServiceMonitor sends.
    let token_volume = list(&pod["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == Some("cemwatch-http"))
        .expect("a volume from the Secret cemwatch-http");
    assert_ne!(token_volume["secret"]["optional"].as_bool(), Some(true));
    assert_eq!(
        mounts[s(&token_volume["name"], "name")],
        "/etc/cemwatch-secrets"
    );
    assert!(
        !docs.keys().any(|k| k.starts_with("Secret/")),
        "no token is shipped in the repository"
    );
    let sm_auth = &get("ServiceMonitor/cemwatch")["spec"]["endpoints"][0]["authorization"];
    assert_eq!(
        s(&sm_auth["credentials"]["name"], "credentials.name"),
        "cemwatch-http"
    );
    let key = s(&sm_auth["credentials"]["key"], "credentials.key");
    assert_eq!(
        user_with_token(&c, &secrets.path().join(key)).role.as_str(),
        "metrics"
    );
    assert_eq!(
        user_with_token(&c, &secrets.path().join("operator-token"))
            .role
            .as_str(),
        "operate"
    );

    // The NetworkPolicy: selects the pod; QUIC from anywhere; HTTP only from named peers.
    let np = get("NetworkPolicy/cemwatch-coordinator");
    assert!(labels_match(
        &np["spec"]["podSelector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(
        strings(&np["spec"]["policyTypes"], "policyTypes"),
        ["Ingress"]
    );
    let mut admitted = BTreeMap::new();
    for rule in list(&np["spec"]["ingress"], "ingress") {
        let from = rule["from"].as_vec().map(Vec::len).unwrap_or(0);
        for p in list(&rule["ports"], "ports") {
            admitted.insert(
                (
                    int(&p["port"], "port") as u16,
                    s(&p["protocol"], "protocol").to_string(),
                ),
                from,
            );
        }
    }
    assert_eq!(
        admitted.get(&(c.server.quic_listen.port(), "UDP".into())),
        Some(&0),
        "probes reach QUIC from anywhere: {admitted:?}"
    );
    assert!(
        admitted
            .get(&(c.server.http_listen.port(), "TCP".into()))
            .is_some_and(|from| *from > 0),
        "HTTP only from the peers named: {admitted:?}"
    );
    for rule in list(&np["spec"]["ingress"], "ingress") {
        for peer in rule["from"].as_vec().map(Vec::as_slice).unwrap_or(&[]) {
            assert!(
                peer["podSelector"]["matchLabels"]
                    .as_hash()
                    .is_some_and(|h| !h.is_empty()),
                "every HTTP peer is selected by pod labels: {peer:?}"
            );
        }
    }

    let claim = &list(&sts["spec"]["volumeClaimTemplates"], "volumeClaimTemplates")[0];
    assert_eq!(
        Path::new(&mounts[s(&claim["metadata"]["name"], "name")]),
        c.server.data_dir.as_path(),
        "data_dir is on the persistent volume"
    );

    // Probes and scraping on the HTTP port; a locked-down pod.
    for (probe, path) in [
        ("livenessProbe", "/live"),
        ("readinessProbe", "/ready"),
        ("startupProbe", "/ready"),
    ] {
        assert_eq!(s(&container[probe]["httpGet"]["path"], probe), path);
        assert_eq!(s(&container[probe]["httpGet"]["port"], probe), "http");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        s(&annotations["prometheus.io/port"], "annotation"),
        c.server.http_listen.port().to_string()
    );
    assert_eq!(
        s(&annotations["prometheus.io/path"], "annotation"),
        "/metrics"
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );

    // Services select the pod and target its ports by name and protocol.
    let pod_labels = &pod["metadata"]["labels"];
    let services: Vec<(&String, &Yaml)> = docs
        .iter()
        .filter(|(k, _)| k.starts_with("Service/"))
        .collect();
    assert!(services.len() >= 3, "quic, http and headless Services");
    for (key, svc) in &services {
        assert!(
            labels_match(&svc["spec"]["selector"], pod_labels),
            "{key} selects the pod"
        );
        for p in svc["spec"]["ports"]
            .as_vec()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let target = s(&p["targetPort"], "targetPort");
            assert_eq!(
                named.get(target).map(|(_, proto)| proto.as_str()),
                Some(s(&p["protocol"], "protocol")),
                "{key}: targetPort {target}"
            );
        }
    }
    assert_eq!(
        get("Service/cemwatch-quic")["spec"]["ports"][0]["protocol"].as_str(),
        Some("UDP")
    );
    let governing = s(&sts["spec"]["serviceName"], "serviceName");
    assert_eq!(
        get(&format!("Service/{governing}"))["spec"]["clusterIP"].as_str(),
        Some("None"),
        "the governing Service is headless"
    );

    // The ServiceMonitor scrapes each coordinator once: exactly one Service matches it with
    // the endpoint's port.
    let sm = get("ServiceMonitor/cemwatch");
    let endpoint = &list(&sm["spec"]["endpoints"], "endpoints")[0];
    let port = s(&endpoint["port"], "port");
    assert_eq!(s(&endpoint["path"], "path"), "/metrics");
    let scraped: Vec<&String> = services
        .iter()
        .filter(|(_, svc)| {
            labels_match(
                &sm["spec"]["selector"]["matchLabels"],
                &svc["metadata"]["labels"],
            ) && svc["spec"]["ports"]
                .as_vec()
                .is_some_and(|ps| ps.iter().any(|p| p["name"].as_str() == Some(port)))
        })
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(
        scraped.len(),
        1,
        "one Service scraped per coordinator: {scraped:?}"
    );
}

#[test]
fn kubectl_kustomize_renders_the_manifests() {
    let test = "kubectl_kustomize_renders_the_manifests";
    // kubectl is not in Debian's packages: where it is installed, it checks the kustomization.
    let Some(kubectl) = tool("kubectl", test, &[], "see kubernetes.io for kubectl") else {
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy().join("kubernetes"))
        .output()
        .expect("kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = YamlLoader::load_from_str(&text).expect("rendered YAML");
    let mut kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort();
    println!("kubectl kustomize deploy/kubernetes: {}", kinds.join(", "));
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str() != Some("Namespace"))
    {
        assert_eq!(
            d["metadata"]["namespace"].as_str(),
            Some("cemwatch"),
            "{d:?}"
        );
    }
    assert!(text.contains("image: registry.example.com/cemwatch/coordinator:0.1.0"));
}

/// Final-stage instructions of a Containerfile: (instruction, rest).
fn stages(text: &str) -> Vec<Vec<(String, String)>> {
    let joined = text.replace("\\\n", " ");
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            out.push(Vec::new());
        }
        if let Some(stage) = out.last_mut() {
            stage.push((op, rest.trim().to_string()));
        }
    }
    out
}

#[test]
fn containerfiles_build_the_workspace_binaries_and_run_them_unprivileged() {
    let dir = deploy().join("container");
    for (file, package, bin) in [
        (
            "coordinator.Containerfile",
            "cemwatch-coordinator",
            "cemwatch",
        ),
        ("probe.Containerfile", "cemwatch-probe", "cemwatch-probe"),
    ] {
        let manifest = read(&repo().join(match package {
            "cemwatch-probe" => "probe/Cargo.toml",
            _ => "coordinator/Cargo.toml",
        }));
        assert!(
            manifest.contains(&format!("name = \"{package}\""))
                && (manifest.contains(&format!("name = \"{bin}\"")) || package == bin),
            "{package} builds a binary named {bin}"
        );
        let text = read(&dir.join(file));
        let st = stages(&text);
        assert!(st.len() >= 2, "{file}: multi-stage");
        let build = &st[0];
        assert!(build[0].1.ends_with("AS build"), "{file}: {:?}", build[0]);
        assert!(
            build.iter().any(|(op, rest)| op == "RUN"
                && rest.contains(&format!(
                    "cargo build --release --locked -p {package} --bin {bin}"
                ))),
            "{file}: builds {bin} from the lock file"
        );
        let last = st.last().expect("final stage");
        let user = last
            .iter()
            .rev()
            .find(|(op, _)| op == "USER")
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("{file}: the final stage sets USER"));
        let uid = user.split(':').next().unwrap_or_default();
        assert!(
            uid.parse::<u32>().is_ok_and(|u| u != 0),
            "{file}: a numeric non-root USER (Kubernetes runAsNonRoot checks it): {user}"
        );
        let binary = format!("/usr/local/bin/{bin}");
        assert!(
            last.iter()
                .any(|(op, rest)| op == "COPY" && rest.ends_with(&binary)),
            "{file}: {binary} copied into the runtime image"
        );
        assert!(
            last.iter()
                .any(|(op, rest)| op == "ENTRYPOINT" && rest.contains(&binary)),
            "{file}: ENTRYPOINT {binary}"
        );
        if bin == "cemwatch-probe" {
            assert!(
                last.iter()
                    .any(|(op, rest)| op == "RUN" && rest.contains("ca-certificates")),
                "{file}: the platform trust store the probe judges chains against"
            );
        } else {
            assert!(
                last.iter().any(|(op, rest)| op == "CMD"
                    && rest.contains("\"--config\", \"/etc/cemwatch/cemwatch.toml\"")),
                "{file}: the default configuration path is the one compose and Kubernetes mount"
            );
        }
    }
    let ignore = read(&repo().join(".dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "/target"),
        ".dockerignore keeps target/ out of the build context"
    );
}

#[test]
fn promtool_accepts_the_prometheus_files() {
    let test = "promtool_accepts_the_prometheus_files";
    let Some(promtool) = tool(
        "promtool",
        test,
        REQUIRE_PROMETHEUS,
        "apt-get install prometheus",
    ) else {
        return;
    };
    let dir = deploy().join("prometheus");
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    let rules = run(&["check", "rules", "cemwatch-fleet.rules.yml"], &dir);
    assert!(rules.contains("SUCCESS: 4 rules found"), "{rules}");
    // promtool wants the scrape's token file to exist: each configuration is checked in a
    // copy whose credentials_file names a token made here (and the rules beside it).
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").expect("token");
    std::fs::copy(
        dir.join("cemwatch-fleet.rules.yml"),
        tmp.path().join("cemwatch-fleet.rules.yml"),
    )
    .expect("copy rules");
    for source in [
        dir.join("prometheus.yml"),
        deploy().join("compose/prometheus.yml"),
    ] {
        let text = read(&source);
        let files: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("credentials_file:"))
            .map(str::trim)
            .collect();
        assert_eq!(
            files.len(),
            1,
            "{}: scrapes with a token file",
            source.display()
        );
        std::fs::write(
            tmp.path().join("prometheus.yml"),
            text.replace(files[0], &token.display().to_string()),
        )
        .expect("write");
        run(&["check", "config", "prometheus.yml"], tmp.path());
    }
    println!("promtool: the fleet recording rules and both Prometheus configurations are valid");
}

/// The Kubernetes configuration with loopback listeners and a temporary data directory.
fn local_copy_of(text: &str, data_dir: &Path) -> String {
    text.lines()
        .map(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            match key {
                "quic_listen" => "quic_listen = \"127.0.0.1:0\"".to_string(),
                "http_listen" => "http_listen = \"127.0.0.1:0\"".to_string(),
                "data_dir" => format!("data_dir = {:?}", data_dir.display().to_string()),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_coordinator_serves_what_the_manifests_probe_and_scrape() {
    let _machine = crate::support::shared();
    let docs = kube_docs();
    let sts = &docs["StatefulSet/cemwatch"];
    let container = &list(&sts["spec"]["template"]["spec"]["containers"], "containers")[0];
    let mut paths: Vec<String> = ["livenessProbe", "readinessProbe", "startupProbe"]
        .iter()
        .map(|p| s(&container[*p]["httpGet"]["path"], p).to_string())
        .collect();
    paths.push(
        s(
            &sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"],
            "annotation",
        )
        .to_string(),
    );
    paths.sort();
    paths.dedup();

    let tmp = tempfile::tempdir().expect("tempdir");
    let secrets = init_secrets();
    let text = secrets_at(
        docs["ConfigMap/cemwatch-config"]["data"]["cemwatch.toml"]
            .as_str()
            .expect("config"),
        "/etc/cemwatch-secrets/",
        secrets.path(),
    );
    let path = tmp.path().join("cemwatch.toml");
    std::fs::write(&path, local_copy_of(&text, &tmp.path().join("data"))).expect("write");
    let mut coord = start_coordinator("coordinator", &path);
    let http: SocketAddr = coord.http;
    let token = read(&secrets.path().join("prometheus-token"));
    for p in &paths {
        let (status, body) = http_get(http, p).expect("GET");
        if p == "/metrics" {
            assert_eq!(
                status, 401,
                "{p} asks for the metrics token, even from loopback: {body}"
            );
            let (status, body) =
                super::secured::get(http, p, Some(&format!("Bearer {}", token.trim())));
            assert_eq!(status, 200, "{p} with the token: {body}");
            assert!(body.contains("cemwatch_probes"), "{body}");
        } else {
            assert_eq!(status, 200, "{p} stays open for the kubelet: {body}");
        }
    }
    println!(
        "the coordinator answers on {} (/metrics with the metrics token)",
        paths.join(", ")
    );
    coord.proc.terminate(std::time::Duration::from_secs(10));
}

/// `deploy/container/pin-images` rewrites every base and third-party image to TAG@DIGEST with
/// what the registry tool answers (here a stand-in `skopeo` on the PATH: this machine reaches no
/// registry), leaves the project's own images alone, and is idempotent.
#[test]
fn pin_images_pins_every_base_and_service_image_by_digest() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("deploy");
    for sub in ["container", "compose"] {
        std::fs::create_dir_all(copy.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(deploy().join(sub)).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, copy.join(sub).join(path.file_name().expect("name")))
                    .expect("copy");
            }
        }
    }
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let skopeo = bin.join("skopeo");
    // A digest derived from the image name, so each image gets its own.
    std::fs::write(
        &skopeo,
        "#!/bin/sh\nprintf 'sha256:%s\\n' \"$(printf %s \"$3\" | sha256sum | cut -c1-64)\"\n",
    )
    .expect("fake skopeo");
    std::fs::set_permissions(&skopeo, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = || {
        let out = Command::new(deploy().join("container").join("pin-images"))
            .arg(&copy)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .expect("pin-images");
        assert!(
            out.status.success(),
            "pin-images: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run();
    let digest = |text: &str| text.contains("@sha256:") && !text.contains("@sha256:\n");
    for file in ["coordinator.Containerfile", "probe.Containerfile"] {
        let text = read(&copy.join("container").join(file));
        for line in text
            .lines()
            .filter(|l| l.starts_with("ARG ") && l.contains("_IMAGE="))
        {
            assert!(digest(line), "{file}: {line}");
        }
    }
    let compose = read(&copy.join("compose").join("compose.yaml"));
    for line in compose
        .lines()
        .filter(|l| l.trim_start().starts_with("image: "))
    {
        if line.contains("docker.io/") {
            assert!(digest(line), "compose.yaml: {line}");
        } else {
            assert!(
                !line.contains("@sha256:"),
                "our own images stay by tag: {line}"
            );
        }
    }
    let second = run();
    assert!(first.contains("pinned 6 image(s)"), "{first}");
    assert!(second.contains("pinned 0 image(s)"), "idempotent: {second}");
    println!("pin-images: {}", first.lines().last().unwrap_or(""));
}
