//! The pipeline API: a Kubernetes-style API server per Pipeline run, so Kratix SDK calls
//! (`PublishStatus` / `publish_status`) and `kubectl get` / `kubectl patch --subresource=status`
//! from inside a resource workflow work unchanged (kratix-lifecycle.md §4, README "Pipeline
//! API").
//!
//! - **What is served** (`server.rs`): discovery (`/version`, `/api`, `/api/v1`, `/apis`,
//!   `/apis/<group>`, `/apis/<group>/<version>`), `GET` of one request and list by plural (in a
//!   namespace or across all), and `PATCH …/namespaces/<ns>/<plural>/<name>/status` with
//!   `application/merge-patch+json` (RFC 7386) on the run's own request. Errors are Kubernetes
//!   `Status` objects with `code`, `reason` and `message`.
//! - **Authorization**: a random bearer token per Pipeline run (never logged, only in the
//!   run's kubeconfig). It reads requests of the run's Promise and of the Promises it lists in
//!   `requiredPromises`, and patches only its own request's status: anything else is 403;
//!   a token of a run that ended (or an unknown one) is 401.
//! - **Status rules** (Kratix: `syntasso/kratix-go@67d7203:sdk.go`, status-writer): a patch is
//!   deep-merged into the request's status at once (`null` deletes, lists replaced); a patch
//!   touching `status.kratix` is refused (422, as `status.yaml` refuses it); at the end of each
//!   Pipeline its `status.yaml` still replaces the top-level keys it sets
//!   ([`super::merge_status`]).
//! - **Visible at once**: every patch writes the run's status to
//!   `<state dir>/published/<sha256 of the request key>.json` ([`published`]), which
//!   `promised status` lays over the rows it reads (daemon or state directory) until the
//!   record holds the result of the run.
//! - **Reaching it** (`pipeline/run.rs`): the server speaks TLS (`tls.rs`: client-go sends a
//!   kubeconfig's token only to `https` servers) and listens on a unix socket in the run
//!   directory, bound into the sandbox at [`SOCKET`]; with the network off, the container's
//!   command runs under `promised adapter kube-forward` ([`forward`]; the promised binary is
//!   bound read-only at [`BINARY`]), which listens on `127.0.0.1:6443` inside the run's own
//!   network namespace and forwards to the socket, so the sandbox gains no other network. With
//!   the network on (or `sandbox: none`) the server also listens on a host loopback port. The
//!   kubeconfig is at [`KUBECONFIG`] (`$KUBECONFIG`) and `$HOME/.kube/config` (`HOME=/root`
//!   unless the container sets it).
//! - **Other requests** come from a catalog the engine refreshes before it runs resource
//!   workflows ([`KubeApi::set_catalog`]), with the live status of runs in progress.
//!
//! Only the host process runtime (bubblewrap or `sandbox: none`) has it; the image runtime and
//! the Kubernetes Job runtime do not (README).

pub mod forward;
pub mod published;
mod server;
#[cfg(test)]
mod server_tests;
mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};

use super::WorkflowInput;
use crate::validate::{ValidPromise, ValidRequest};

/// Where the API's unix socket is bound inside the sandbox.
pub const SOCKET: &str = "/run/promised/api.sock";
/// Where the kubeconfig is bound inside the sandbox (and `KUBECONFIG` points).
pub const KUBECONFIG: &str = "/run/promised/kubeconfig";
/// Where the promised binary is bound inside the sandbox (runs `adapter kube-forward`).
pub const BINARY: &str = "/run/promised/promised";
/// The address `adapter kube-forward` listens on inside the run's network namespace.
pub const FORWARD_ADDR: &str = "127.0.0.1:6443";
/// `HOME` inside the sandbox when the container does not set it (Kubernetes gives root
/// containers `/root`); the kubeconfig is also at `$HOME/.kube/config` (kratix-go reads only
/// that one).
pub const DEFAULT_HOME: &str = "/root";

/// The pipeline API of a runner: the catalog of requests pipelines may read, the live runs
/// (by token) and where published status goes. Shared by every run of one runner.
#[derive(Debug)]
pub struct KubeApi {
    published_dir: PathBuf,
    binary: Option<PathBuf>,
    catalog: RwLock<Arc<Catalog>>,
    runs: Mutex<HashMap<String, Arc<RunCtx>>>,
    tls: std::sync::OnceLock<Result<tls::Tls, String>>,
}

/// One Promise's API as pipelines see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEntry {
    /// Promise name.
    pub promise: String,
    /// `spec.group`.
    pub group: String,
    /// The storage version.
    pub version: String,
    /// `spec.names.kind`.
    pub kind: String,
    /// `spec.names.plural`.
    pub plural: String,
    /// `spec.requiredPromises[].name`.
    pub required: Vec<String>,
}

/// One request as pipelines read it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// `<promise>/<namespace>/<name>`.
    pub key: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The admitted object (no `status`), as compact text read when a pipeline reads it.
    pub object: crate::state::CompactValue,
    /// Its status as last recorded: the pipelines' keys, `message`, `conditions`.
    pub status: StatusText,
}

/// A request's status as pipelines read it: the record's own status (shared, not copied:
/// [`crate::status::SharedStatus`]; the catalog lists every request of the Promises a run
/// may read), or a given map. Turned into a map when a pipeline reads the request.
#[derive(Debug, Clone, Default)]
pub struct StatusText(Option<Shown>);

#[derive(Debug, Clone)]
enum Shown {
    Record(Arc<crate::status::ObjectStatus>),
    /// A copy as JSON text (a request the stage runs: its record changes under the catalog;
    /// a given map).
    Text(Arc<str>),
}

impl StatusText {
    /// `status` as it is (nothing for an empty one).
    pub fn new(status: &Map<String, Value>) -> StatusText {
        if status.is_empty() {
            return StatusText(None);
        }
        StatusText(
            serde_json::to_string(status)
                .ok()
                .map(|t| Shown::Text(t.into())),
        )
    }

    /// The status as a JSON object (empty when there is none): for a record's, the
    /// pipelines' own keys (`fields`), with `message` and `conditions` from the record unless
    /// a pipeline set them.
    pub fn to_map(&self) -> Map<String, Value> {
        match &self.0 {
            None => Map::new(),
            Some(Shown::Record(s)) => view(s),
            Some(Shown::Text(t)) => serde_json::from_str(t).unwrap_or_default(),
        }
    }
}

/// A recorded status as pipelines read it: the pipelines' own keys (`fields`), with
/// `message` and `conditions` from the record unless a pipeline set them.
fn view(s: &crate::status::ObjectStatus) -> Map<String, Value> {
    let mut m = Map::new();
    if !s.message.is_empty() && !s.fields.contains_key("message") {
        m.insert("message".into(), Value::String(s.message.clone()));
    }
    if !s.conditions.is_empty() && !s.fields.contains_key("conditions") {
        let conditions = serde_json::to_value(&s.conditions).expect("conditions serialise");
        m.insert("conditions".into(), conditions);
    }
    m.extend(s.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    m
}

/// What pipelines may read: every Promise's API and every admitted request, by Promise.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Promise name → API.
    pub promises: BTreeMap<String, ApiEntry>,
    /// Promise name → its requests, by namespace and name.
    pub requests: BTreeMap<String, Vec<Listed>>,
}

impl Catalog {
    /// Builds the catalog of `promises` and `requests`; `status` gives a request's recorded
    /// status (by key) as pipelines see it ([`status_text`]).
    pub fn build<'r>(
        promises: &[ValidPromise],
        requests: impl IntoIterator<Item = &'r Arc<ValidRequest>>,
        mut status: impl FnMut(&str) -> Option<StatusText>,
    ) -> Catalog {
        let mut c = Catalog::default();
        for p in promises {
            let Some(api) = &p.api else { continue };
            c.promises.insert(
                p.name().to_string(),
                ApiEntry {
                    promise: p.name().to_string(),
                    group: api.group.clone(),
                    version: api.version.clone(),
                    kind: api.kind.clone(),
                    plural: api.plural.clone(),
                    required: p
                        .promise
                        .object
                        .spec
                        .required_promises
                        .iter()
                        .map(|r| r.name.clone())
                        .collect(),
                },
            );
        }
        for r in requests {
            c.requests
                .entry(r.promise.clone())
                .or_default()
                .push(Listed {
                    key: r.key().to_string(),
                    namespace: r.namespace().to_string(),
                    name: r.name().to_string(),
                    object: r.object.clone(),
                    status: status(r.key()).unwrap_or_default(),
                });
        }
        c
    }
}

/// A recorded status as pipelines read it ([`StatusText::to_map`]), sharing the record's:
/// for a request whose record the stage does not change.
pub fn status_text(s: &crate::status::SharedStatus) -> StatusText {
    StatusText(Some(Shown::Record(s.share())))
}

/// A recorded status as pipelines read it, copied as JSON text: for a request the stage runs
/// (its record's status changes during the stage; a shared one would then be kept alive
/// beside the new one, 13 MB in a cold pass at 10,000 requests).
pub fn status_copy(s: &crate::status::ObjectStatus) -> StatusText {
    StatusText::new(&view(s))
}

/// One Pipeline run the API serves.
#[derive(Debug)]
pub(crate) struct RunCtx {
    key: String,
    namespace: String,
    name: String,
    api: ApiEntry,
    /// The run's Promise and the Promises it requires.
    allowed: BTreeSet<String>,
    object: Arc<Value>,
    /// The request's status during the run: what it started with, with every patch merged.
    live: Mutex<Map<String, Value>>,
    /// The status view of the record (message, conditions) shown with `live`.
    recorded: StatusText,
    user: String,
    published: PathBuf,
}

impl KubeApi {
    /// The pipeline API of a runner whose state directory is `state_dir` (published status
    /// goes to `<state_dir>/published/`). The promised binary bound into sandboxes is this
    /// process's own executable.
    pub fn new(state_dir: &Path) -> KubeApi {
        KubeApi {
            published_dir: published::dir(state_dir),
            // Only the promised binary itself has `adapter kube-forward` (not, say, a test
            // harness running the engine in process).
            binary: std::env::current_exe()
                .ok()
                .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n == "promised")),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            runs: Mutex::new(HashMap::new()),
            tls: std::sync::OnceLock::new(),
        }
    }

    /// Replaces the catalog pipelines read other requests from (the engine calls it before
    /// running resource workflows).
    pub fn set_catalog(&self, catalog: Catalog) {
        if let Ok(mut c) = self.catalog.write() {
            *c = Arc::new(catalog);
        }
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The run of `token`, when it is live.
    fn run_of(&self, token: &str) -> Option<Arc<RunCtx>> {
        use subtle::ConstantTimeEq;
        let runs = self.runs.lock().ok()?;
        runs.iter()
            .find(|(t, _)| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
            .map(|(_, r)| r.clone())
    }

    /// The live run of request `key`, if one is in progress.
    fn live_run(&self, key: &str) -> Option<Arc<RunCtx>> {
        let runs = self.runs.lock().ok()?;
        runs.values().find(|r| r.key == key).cloned()
    }

    /// A resource workflow of request `key` starts (or its delete workflow ends): a published
    /// status of an earlier run is dropped (the record has it).
    pub fn workflow_started(&self, key: &str) {
        let _ = std::fs::remove_file(published::file(&self.published_dir, key));
    }

    /// A resource workflow of request `key` ended with `status`: when a Pipeline published
    /// status during it, the published file keeps that final status (no longer live) until
    /// the next run of the request, so `promised status` never shows an older one while the
    /// record is being saved.
    pub fn workflow_finished(&self, key: &str, status: &Map<String, Value>) {
        let path = published::file(&self.published_dir, key);
        if let Ok(b) = std::fs::read(&path)
            && let Ok(p) = serde_json::from_slice::<published::Published>(&b)
        {
            published::write(&path, key, &p.kind, false, status);
        }
    }

    /// Starts the API for one Pipeline of `input` (a resource workflow) whose status is
    /// `status`, listening on a unix socket in `dir` (created) and, with `host_port`, on a
    /// host loopback port too. Writes the kubeconfigs there.
    ///
    /// Errors: the socket, listener or files cannot be made (the run then goes without API).
    pub(crate) async fn start(
        self: &Arc<Self>,
        input: &WorkflowInput<'_>,
        status: &Map<String, Value>,
        dir: &Path,
        host_port: bool,
    ) -> std::io::Result<RunApi> {
        let tls = self
            .tls
            .get_or_init(tls::make)
            .clone()
            .map_err(std::io::Error::other)?;
        let catalog = self.catalog();
        let o = &input.object;
        let key = crate::model::request_key(&input.promise_name, &o.namespace, &o.name);
        let api = catalog
            .promises
            .get(&input.promise_name)
            .cloned()
            .unwrap_or_else(|| ApiEntry {
                promise: input.promise_name.clone(),
                group: o.group.clone(),
                version: o.version.clone(),
                kind: o.kind.clone(),
                plural: input.crd_plural.clone(),
                required: Vec::new(),
            });
        let mut allowed: BTreeSet<String> = api.required.iter().cloned().collect();
        allowed.insert(input.promise_name.clone());
        let object = match crate::config::parse_yaml_stream(&input.object_yaml).as_deref() {
            Ok([v @ Value::Object(_)]) => {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("status");
                }
                Arc::new(v)
            }
            _ => Arc::new(Value::Object(Map::new())),
        };
        let recorded = catalog
            .requests
            .get(&input.promise_name)
            .and_then(|rs| rs.iter().find(|r| r.key == key))
            .map(|r| r.status.clone())
            .unwrap_or_default();
        let token = random_token()?;
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let tcp = if host_port {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        } else {
            None
        };
        let ctx = Arc::new(RunCtx {
            user: format!("promised:pipeline:{key}"),
            published: published::file(&self.published_dir, &key),
            key,
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            api,
            allowed,
            object,
            live: Mutex::new(status.clone()),
            recorded,
        });
        let kubeconfig = dir.join("kubeconfig");
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(
                &format!("https://{FORWARD_ADDR}"),
                &tls.ca_pem,
                &token,
                &o.namespace,
            ),
        )?;
        let mut host_kubeconfig = None;
        let mut tasks = Vec::new();
        let router = server::router(self.clone());
        if let Some(tcp) = tcp {
            let addr = tcp.local_addr()?;
            let path = dir.join("kubeconfig-host");
            write_private(
                &path,
                &kubeconfig_yaml(
                    &format!("https://{addr}"),
                    &tls.ca_pem,
                    &token,
                    &o.namespace,
                ),
            )?;
            host_kubeconfig = Some(path);
            let r = router.clone();
            let tcp = tls::TlsListener {
                inner: tcp,
                acceptor: tls.acceptor.clone(),
            };
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(tcp, r).await;
            }));
        }
        let listener = tls::TlsListener {
            inner: listener,
            acceptor: tls.acceptor.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }));
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(token.clone(), ctx.clone());
        }
        Ok(RunApi {
            hub: self.clone(),
            ctx,
            token,
            socket,
            kubeconfig,
            host_kubeconfig,
            binary: self.binary.clone(),
            tasks,
        })
    }
}

/// The API of one running Pipeline; [`RunApi::finish`] ends it.
#[derive(Debug)]
pub(crate) struct RunApi {
    hub: Arc<KubeApi>,
    ctx: Arc<RunCtx>,
    token: String,
    /// Host path of the unix socket.
    pub socket: PathBuf,
    /// Host path of the kubeconfig for sandboxes without network (the forwarder's address).
    pub kubeconfig: PathBuf,
    /// Host path of the kubeconfig naming the host loopback port, when there is one.
    pub host_kubeconfig: Option<PathBuf>,
    /// Host path of the promised binary (`None` when this process is not `promised`: then
    /// only sandboxes with network reach the API).
    pub binary: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunApi {
    /// Ends the run: its token stops working (401), the listeners close; returns the status
    /// with every patch merged.
    pub fn finish(self) -> Map<String, Value> {
        if let Ok(mut runs) = self.hub.runs.lock() {
            runs.remove(&self.token);
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
        self.ctx
            .live
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

impl Drop for RunApi {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.hub.runs.lock() {
            runs.remove(&self.token);
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    use base64::Engine;
    let ns = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "promised", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": "pipeline", "user": {"token": token}}],
        "contexts": [{"name": "promised", "context": {"cluster": "promised", "user": "pipeline", "namespace": ns}}],
        "current-context": "promised",
        "preferences": {},
    });
    crate::validate::to_yaml(&v)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// 32 random bytes from the kernel, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// RFC 7386 JSON merge patch of `patch` into `target` (objects merge recursively, `null`
/// deletes, anything else replaces).
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(t) = entry {
                    merge_patch(t, p);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 1, "d": 2}, "l": [1, 2], "x": "y"})
            .as_object()
            .unwrap()
            .clone();
        let p = json!({"b": {"c": null, "e": 3}, "l": [3], "x": null, "n": {"m": 1}})
            .as_object()
            .unwrap()
            .clone();
        merge_patch(&mut t, &p);
        assert_eq!(
            Value::Object(t),
            json!({"a": 1, "b": {"d": 2, "e": 3}, "l": [3], "n": {"m": 1}})
        );
    }

    #[test]
    fn the_catalogs_status_text_is_the_recorded_status_as_pipelines_read_it() {
        let id = crate::model::ObjectRef {
            kind: "App".into(),
            namespace: Some("default".into()),
            name: "a".into(),
        };
        let mut st: crate::status::SharedStatus =
            crate::status::ObjectStatus::new(id, "app").into();
        st.message = String::new();
        assert!(status_text(&st).to_map().is_empty());
        assert!(status_copy(&st).to_map().is_empty());
        st.message = "Resource requested".into();
        st.set(
            "Reconciled",
            crate::status::ConditionStatus::True,
            "ReconcileSucceeded",
            "Reconciled",
        );
        st.fields.insert("url".into(), json!("https://x"));
        let view = status_text(&st).to_map();
        assert_eq!(view["message"], "Resource requested");
        assert_eq!(view["url"], "https://x");
        assert_eq!(
            view["conditions"],
            serde_json::to_value(&st.conditions).unwrap()
        );
        assert_eq!(view.len(), 3);
        // A pipeline's own `message` wins over the record's.
        st.fields
            .insert("message".into(), json!("from the pipeline"));
        let view = status_text(&st).to_map();
        assert_eq!(
            status_copy(&st).to_map(),
            view,
            "a copy reads as the shared status"
        );
        assert_eq!(view["message"], "from the pipeline");
        assert_eq!(view["conditions"][0]["type"], "Reconciled");
        assert_eq!(view.len(), 3);
    }

    #[test]
    fn kubeconfig_names_server_token_and_namespace() {
        let y = kubeconfig_yaml("https://127.0.0.1:6443", "PEM", "tok", "team-a");
        let v = &crate::config::parse_yaml_stream(&y).unwrap()[0];
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(v["contexts"][0]["context"]["namespace"], "team-a");
        assert_eq!(v["current-context"], "promised");
    }
}
