//! The kustomize manifests in `deploy/`, as `kubectl kustomize deploy/` renders them, checked
//! against the code they deploy: the Role grants exactly `cluster::required_access()`, the
//! ConfigMap's daemon config loads with the real settings loader, every path the Deployment's
//! args and that config name lies on a volume the pod mounts, the probe and Service ports are
//! the `listen` port, and the probe and webhook paths answer on the real daemon started from
//! the rendered args and config (no API server can run here, test-infrastructure.md §3: the
//! daemon runs on 127.0.0.1 without the in-cluster keys).
//!
//! Needs `kubectl` (Debian: kubernetes-client); skips with a message without it, fails under
//! `PROMISED_REQUIRE_KUBECTL=1` or `PROMISED_REQUIRE_IMAGES=1` (CI).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{GitDaemon, git, repo_root};
use serde_json::{Value, json};

/// The rendered objects, or None (skipped) without kubectl.
fn rendered(test: &str) -> Option<Vec<Value>> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            let msg = format!("{test}: kubectl cannot run ({e}); Debian: kubernetes-client");
            if ["PROMISED_REQUIRE_KUBECTL", "PROMISED_REQUIRE_IMAGES"]
                .iter()
                .any(|v| std::env::var_os(v).is_some())
            {
                panic!("PROMISED_REQUIRE_KUBECTL/PROMISED_REQUIRE_IMAGES is set: {msg}");
            }
            eprintln!("SKIPPED {msg}; set PROMISED_REQUIRE_KUBECTL=1 to make this a failure");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML parses");
    Some(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The one object of `kind`; panics if there is none or more.
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(all.len(), 1, "one {kind} expected, got {}", all.len());
    all[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The placeholders of `deploy/secrets.example.yaml`: Secret name → key → value.
fn example_secrets() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(repo_root().join("deploy/secrets.example.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| {
            assert_eq!(d["metadata"]["namespace"], "promised");
            let data = d["stringData"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (d["metadata"]["name"].as_str().unwrap().to_string(), data)
        })
        .collect()
}

/// The Deployment's pod spec and its one container.
fn pod(docs: &[Value]) -> (&Value, &Value) {
    let spec = &one(docs, "Deployment")["spec"]["template"]["spec"];
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    (spec, &containers[0])
}

/// The daemon config file the ConfigMap carries, and the path the container reads it at.
fn daemon_config(docs: &[Value]) -> (String, String) {
    let (_, c) = pod(docs);
    let args = strs(&c["args"]);
    let i = args
        .iter()
        .position(|a| a == "--daemon-config")
        .expect("the args name --daemon-config");
    let path = args[i + 1].clone();
    let (mount, rest) = mount_of(docs, &path).expect("--daemon-config is on a mounted volume");
    let volume = volume(docs, mount["name"].as_str().unwrap());
    let name = volume["configMap"]["name"]
        .as_str()
        .expect("the daemon config comes from a ConfigMap");
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("ConfigMap {name} is rendered"));
    let text = cm["data"][rest.as_str()]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has key {rest}"))
        .to_string();
    (path, text)
}

/// The volumeMount holding absolute `path`, and `path` relative to it.
fn mount_of<'a>(docs: &'a [Value], path: &str) -> Option<(&'a Value, String)> {
    let (_, c) = pod(docs);
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let rel = Path::new(path)
                .strip_prefix(m["mountPath"].as_str().unwrap())
                .ok()?;
            Some((m, rel.to_str().unwrap().to_string()))
        })
        // The innermost mount.
        .max_by_key(|(m, _)| m["mountPath"].as_str().unwrap().len())
}

fn volume<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    let (spec, _) = pod(docs);
    spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("volume {name} is declared"))
}

/// Writes the daemon config to a file and loads it with the real loader.
fn load(text: &str, dir: &Path) -> promised::settings::Settings {
    let f = dir.join("promised.yaml");
    std::fs::write(&f, text).unwrap();
    promised::settings::Settings::load(Some(&f), Default::default())
        .unwrap_or_else(|e| panic!("the ConfigMap's daemon config does not load: {e}\n{text}"))
}

#[test]
fn the_role_grants_exactly_what_the_daemon_calls() {
    let Some(docs) = rendered("the_role_grants_exactly_what_the_daemon_calls") else {
        return;
    };
    // Namespaced access only.
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        assert!(
            !docs.iter().any(|d| d["kind"] == kind),
            "a {kind} is rendered"
        );
    }
    let role = one(&docs, "Role");
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        let keys: BTreeSet<&str> = rule
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["apiGroups", "resources", "verbs"]),
            "a rule with other fields (resourceNames, nonResourceURLs): {rule}"
        );
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                granted
                    .entry((g.clone(), r))
                    .or_default()
                    .extend(strs(&rule["verbs"]));
            }
        }
    }
    let required: BTreeMap<(String, String), BTreeSet<String>> =
        promised::cluster::required_access()
            .into_iter()
            .map(|(g, r, v)| ((g, r), v.into_iter().collect()))
            .collect();
    assert_eq!(
        granted, required,
        "deploy/role.yaml must grant exactly cluster::required_access()"
    );
    assert!(
        !granted.values().flatten().any(|v| v == "*"),
        "no wildcard verbs"
    );

    // Bound to the ServiceAccount the pods run as, in the namespace they run in.
    let ns = one(&docs, "Namespace")["metadata"]["name"].clone();
    assert_eq!(ns, "promised");
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], ns, "{} namespace", d["kind"]);
        }
    }
    let sa = one(&docs, "ServiceAccount")["metadata"]["name"].clone();
    let binding = one(&docs, "RoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
    );
    let (spec, _) = pod(&docs);
    assert_eq!(spec["serviceAccountName"], sa);
}

#[test]
fn the_deployment_runs_the_configmap_config_with_everything_mounted() {
    let Some(docs) = rendered("the_deployment_runs_the_configmap_config_with_everything_mounted")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (config_path, text) = daemon_config(&docs);
    let s = load(&text, tmp.path());
    let deployment = one(&docs, "Deployment");
    let (spec, c) = pod(&docs);

    // Two replicas, one of which reconciles: leader election on, identity from the pod.
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(s.leader_election.is_some(), "leaderElection is set");
    assert_eq!(s.runtime, promised::cluster::Runtime::Kubernetes);
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The Job runtime's adapter containers run the daemon's own image.
    assert_eq!(c["image"], s.kubernetes.adapter_image.as_str());
    // The selector picks the template's pods.
    let template_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&template_labels[k], v, "selector label {k}");
    }

    // Ports: the container port is the listen port, on every address; probes and the
    // Service use it.
    let listen: std::net::SocketAddr = s.listen.parse().expect("listen is an address");
    assert!(
        listen.ip().is_unspecified(),
        "listen {listen} is not reachable from the kubelet and the Service"
    );
    let ports = c["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0]["containerPort"], listen.port());
    let port_name = ports[0]["name"].as_str().unwrap();
    let resolves = |p: &Value| p == port_name || p.as_u64() == Some(listen.port() as u64);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert!(
            resolves(&c[probe]["httpGet"]["port"]),
            "{probe} port {}",
            c[probe]["httpGet"]["port"]
        );
    }
    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["selector"], *template_labels);
    let sports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(sports.len(), 1);
    assert!(resolves(&sports[0]["targetPort"]), "{}", sports[0]);

    // Security: not root, read-only root, no privilege escalation, no capabilities.
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    // Every path the daemon reads or writes is on a mounted volume of the right kind: the
    // daemon config on its ConfigMap, the state on an emptyDir mounted writable, the secrets
    // directory holding one Secret per directory, the webhook secret a key of its Secret.
    let (m, _) = mount_of(&docs, &config_path).unwrap();
    assert_eq!(m["readOnly"], true);
    let state = s.state_dir.to_str().unwrap();
    let (m, rest) = mount_of(&docs, state).expect("stateDir is on a mounted volume");
    assert_eq!(rest, "", "stateDir is the volume itself");
    assert!(m["readOnly"] != true, "stateDir is writable");
    assert!(volume(&docs, m["name"].as_str().unwrap())["emptyDir"].is_object());
    assert_eq!(
        env.get("STATE_DIRECTORY").map(|e| e["value"].clone()),
        None,
        "stateDir comes from the config"
    );
    let secrets = example_secrets();
    let secrets_dir = s.secrets_dir.clone().expect("secretsDir is set");
    let mut under_secrets_dir = 0;
    for m in c["volumeMounts"].as_array().unwrap() {
        let v = volume(&docs, m["name"].as_str().unwrap());
        let Some(secret) = v["secret"]["secretName"].as_str() else {
            continue;
        };
        assert_eq!(m["readOnly"], true, "{m}");
        assert!(
            secrets.contains_key(secret),
            "Secret {secret} is in deploy/secrets.example.yaml"
        );
        let path = PathBuf::from(m["mountPath"].as_str().unwrap());
        if path.parent() == Some(secrets_dir.as_path()) {
            // `<secretsDir>/<secret name>/<key>`.
            assert_eq!(path.file_name().unwrap(), secret, "{m}");
            under_secrets_dir += 1;
        }
    }
    assert!(
        under_secrets_dir > 0,
        "no Secret mounted under {secrets_dir:?}"
    );
    let webhook = s.webhook_secret_file.clone().expect("webhookSecretFile");
    let (m, key) = mount_of(&docs, webhook.to_str().unwrap()).expect("webhook secret mounted");
    let secret = volume(&docs, m["name"].as_str().unwrap())["secret"]["secretName"]
        .as_str()
        .expect("the webhook secret comes from a Secret");
    assert!(
        secrets[secret].contains_key(&key),
        "Secret {secret} has key {key}"
    );
    // Files the args name (the config repo is a URL from the env).
    let args = strs(&c["args"]);
    assert_eq!(args[0], "run");
    for (i, a) in args.iter().enumerate() {
        if a == "--daemon-config" || a == "--webhook-secret-file" {
            assert!(
                mount_of(&docs, &args[i + 1]).is_some(),
                "{a} {}",
                args[i + 1]
            );
        }
        if let Some(var) = a.strip_prefix("$(").and_then(|a| a.strip_suffix(')')) {
            assert!(
                env.contains_key(var),
                "args use $({var}), which env does not set"
            );
        }
    }
}

/// A running daemon, killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[], "")
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut r = if method == "GET" {
        agent.get(&url).call().ok()?
    } else {
        let mut req = agent.post(&url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send(body).ok()?
    };
    Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
}

#[test]
fn the_probe_and_webhook_paths_answer_on_the_daemon_the_deployment_starts() {
    let Some(docs) =
        rendered("the_probe_and_webhook_paths_answer_on_the_daemon_the_deployment_starts")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // The pod's file system: each volume mounted under `root`, filled as the kubelet would
    // (ConfigMap keys, the example Secrets' keys, empty emptyDirs).
    let root = tmp.path().join("pod");
    let (_, c) = pod(&docs);
    let secrets = example_secrets();
    for m in c["volumeMounts"].as_array().unwrap() {
        let dir = root.join(m["mountPath"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let v = volume(&docs, m["name"].as_str().unwrap());
        let files: BTreeMap<String, String> = if let Some(name) = v["configMap"]["name"].as_str() {
            let cm = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
                .unwrap();
            serde_json::from_value(cm["data"].clone()).unwrap()
        } else if let Some(name) = v["secret"]["secretName"].as_str() {
            secrets[name].clone()
        } else {
            assert!(v["emptyDir"].is_object(), "volume kind: {v}");
            BTreeMap::new()
        };
        for (k, text) in files {
            std::fs::write(dir.join(k), text).unwrap();
        }
    }
    // A path on a mounted volume (or holding mounted volumes: secretsDir).
    let in_pod = |p: &str| -> PathBuf {
        let holds_mounts = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| Path::new(m["mountPath"].as_str().unwrap()).starts_with(p));
        assert!(
            holds_mounts || mount_of(&docs, p).is_some(),
            "{p} is on no mounted volume"
        );
        root.join(p.trim_start_matches('/'))
    };
    // The daemon config, with its paths in the pod's file system. The in-cluster keys need an
    // API server, which cannot run here: the daemon runs without them (the loader test above
    // checks them).
    let (config_path, text) = daemon_config(&docs);
    let mut config: serde_json::Map<String, Value> = serde_saphyr::from_str(&text).unwrap();
    for key in ["stateDir", "secretsDir", "webhookSecretFile", "runDir"] {
        if let Some(p) = config.get(key).and_then(Value::as_str) {
            let p = in_pod(p).to_str().unwrap().to_string();
            config.insert(key.into(), p.into());
        }
    }
    for key in ["runtime", "kubernetes", "leaderElection"] {
        config.remove(key);
    }
    let listen: std::net::SocketAddr = config["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(listen.port(), c["ports"][0]["containerPort"]);
    // A free port on 127.0.0.1 instead (other tests and daemons share this machine).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.insert("listen".into(), format!("127.0.0.1:{port}").into());
    std::fs::write(
        in_pod(&config_path),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();

    // The config repo the env names: the quickstart, served by git daemon.
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let gd = GitDaemon::start(&srv);
    let url = gd.bare_repo("config.git");
    let work = tmp.path().join("config");
    common::copy_dir(&repo_root().join("testdata/quickstart"), &work);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "config"]);
    git(&work, &["push", "-q", &url, "main"]);

    // The container's args, with $(VAR) from its env (the config repo URL replaced).
    let mut env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    env.insert("PROMISED_CONFIG_REPO".into(), url.clone());
    env.insert("POD_NAME".into(), "promised-0".into());
    env.insert("POD_NAMESPACE".into(), "promised".into());
    let mut args: Vec<String> = strs(&c["args"])
        .into_iter()
        .map(|a| {
            let mut a = a;
            for (k, v) in &env {
                a = a.replace(&format!("$({k})"), v);
            }
            a
        })
        .collect();
    let i = args.iter().position(|a| a == "--daemon-config").unwrap();
    args[i + 1] = in_pod(&args[i + 1]).to_str().unwrap().to_string();
    let log = tmp.path().join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promised"));
    cmd.args(&args)
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &env {
        // PROMISED_CONFIG_REPO/REF are command-line inputs, not settings: safe to pass.
        cmd.env(k, v);
    }
    let _daemon = Daemon(cmd.spawn().expect("promised run starts"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // /healthz: 200 at once; /readyz: 200 once the config loaded and the state store is
    // writable (503 with the reason before).
    let t = Instant::now();
    let mut last = None;
    while t.elapsed() < Duration::from_secs(60) {
        last = get(
            port,
            c["readinessProbe"]["httpGet"]["path"].as_str().unwrap(),
        );
        if matches!(last, Some((200, _))) {
            break;
        }
        if let Some((code, body)) = &last {
            assert_eq!(*code, 503, "/readyz: {body}");
            assert!(body.contains("config loaded:"), "/readyz: {body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = last.unwrap_or_else(|| panic!("no answer on /readyz:\n{}", log_text()));
    assert_eq!(code, 200, "/readyz: {body}\n{}", log_text());
    assert_eq!(body, "config loaded: true\nstate stores writable: true\n");
    let live = c["livenessProbe"]["httpGet"]["path"].as_str().unwrap();
    assert_eq!(get(port, live), Some((200, "ok\n".into())));

    // The webhook path through the Service: a call without the secret is refused, one with
    // the example Secret's value is accepted (GitLab's token header).
    let push = r#"{"ref":"refs/heads/main"}"#;
    let (code, body) = request(port, "POST", "/hooks/git", &[], push).unwrap();
    assert_eq!(code, 401, "{body}");
    let webhook = text
        .lines()
        .find_map(|l| l.strip_prefix("webhookSecretFile:"))
        .expect("webhookSecretFile")
        .trim();
    let (m, key) = mount_of(&docs, webhook).unwrap();
    let secret = volume(&docs, m["name"].as_str().unwrap())["secret"]["secretName"]
        .as_str()
        .unwrap();
    let token = &secrets[secret][&key];
    let (code, body) = request(
        port,
        "POST",
        "/hooks/git",
        &[
            ("X-Gitlab-Token", token),
            ("Content-Type", "application/json"),
        ],
        push,
    )
    .unwrap();
    assert_eq!((code, body.as_str()), (202, "reconcile queued\n"));
}
