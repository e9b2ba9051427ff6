//! The image store against a registry that wants a Bearer token (the Docker/OCI token flow):
//! a fake registry (axum, on 127.0.0.1) serving an OCI image layout built by `umoci`, which
//! answers every request without a valid token with 401 and a `WWW-Authenticate: Bearer
//! realm=…,service=…,scope=…` challenge, and hands out tokens at its realm only for the right
//! Basic credentials. Each token opens only the repository of its scope. Skipped with a
//! message when the image tools are missing, unless `PROMISED_REQUIRE_IMAGES` is set.

#[path = "common/registry.rs"]
mod registry;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use promised::image::{ImageError, ImageSettings, ImageStore, PullPolicy};
use registry::{build_images, log_text, logs, tag_descriptor, tools_available};
use statestores::NetworkTimeouts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `service` of the fake registry's challenge and token endpoint.
const SERVICE: &str = "fake-registry";
/// The only repository the fake registry holds.
const REPO: &str = "test/busybox";
const USER: &str = "tester";
const PASSWORD: &str = "b3arer-Pw-4711";

/// A random hex string (64 bits from the std hasher's random keys, twice).
fn random_hex() -> String {
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The fake registry's state.
struct Fake {
    /// The OCI image layout served.
    layout: PathBuf,
    /// `http://127.0.0.1:<port>/token`.
    realm: String,
    /// The `Authorization` value the token endpoint accepts.
    basic: String,
    /// Tokens issued, each with its scope.
    tokens: Mutex<HashMap<String, String>>,
    /// Requests to the token endpoint (granted or not).
    token_requests: AtomicUsize,
    /// Media types of the blobs the layout's manifests name (config, layers, manifests).
    media_types: HashMap<String, String>,
}

/// A running fake registry: `host` is `127.0.0.1:<port>`.
struct FakeRegistry {
    host: String,
    addr: SocketAddr,
    state: Arc<Fake>,
}

impl FakeRegistry {
    /// Binds 127.0.0.1:0 and serves `layout` on the current runtime.
    async fn start(layout: &Path) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Fake {
            layout: layout.to_path_buf(),
            realm: format!("http://{addr}/token"),
            basic: format!("Basic {}", b64(&format!("{USER}:{PASSWORD}"))),
            tokens: Mutex::new(HashMap::new()),
            token_requests: AtomicUsize::new(0),
            media_types: media_types(layout),
        });
        let app = Router::new()
            .route("/token", get(token))
            .route("/v2/", get(base))
            .route("/v2/{*rest}", get(content))
            .with_state(state.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        FakeRegistry {
            host: addr.to_string(),
            addr,
            state,
        }
    }

    fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

/// Digest → media type of every descriptor reachable from the layout's `index.json`.
fn media_types(layout: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut todo: Vec<serde_json::Value> = index["manifests"].as_array().unwrap().clone();
    while let Some(d) = todo.pop() {
        let (Some(digest), Some(media_type)) = (d["digest"].as_str(), d["mediaType"].as_str())
        else {
            continue;
        };
        if out
            .insert(digest.to_string(), media_type.to_string())
            .is_some()
        {
            continue;
        }
        if media_type.ends_with("manifest.v1+json") || media_type.ends_with("index.v1+json") {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(blob_path(layout, digest).unwrap()).unwrap())
                    .unwrap();
            todo.push(m["config"].clone());
            for list in ["layers", "manifests"] {
                if let Some(a) = m[list].as_array() {
                    todo.extend(a.iter().cloned());
                }
            }
        }
    }
    out
}

/// `blobs/sha256/<hex>` of the layout, for a well-formed sha256 digest only.
fn blob_path(layout: &Path, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| layout.join("blobs/sha256").join(hex))
}

/// An OCI error answer.
fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string(),
    )
        .into_response()
}

/// 401 with the Bearer challenge (with the scope of `repository`, when given).
fn challenge(fake: &Fake, repository: Option<&str>) -> Response {
    let mut value = format!("Bearer realm=\"{}\",service=\"{SERVICE}\"", fake.realm);
    if let Some(r) = repository {
        value.push_str(&format!(",scope=\"repository:{r}:pull\""));
    }
    let mut response = oci_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).unwrap(),
    );
    response
}

/// Whether `headers` carry a token issued by `fake` whose scope opens `repository` (any
/// valid token when `None`).
fn authorized(fake: &Fake, headers: &HeaderMap, repository: Option<&str>) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    match fake.tokens.lock().unwrap().get(token) {
        Some(scope) => repository.is_none_or(|r| *scope == format!("repository:{r}:pull")),
        None => false,
    }
}

/// `GET /token?service=…&scope=repository:<name>:pull` with Basic credentials.
async fn token(
    State(fake): State<Arc<Fake>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    fake.token_requests.fetch_add(1, Ordering::SeqCst);
    let basic_ok = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == fake.basic.as_bytes());
    if !basic_ok {
        let mut r = oci_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "wrong or no credentials",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fake-registry\""),
        );
        return r;
    }
    let scope = query.get("scope").map(String::as_str).unwrap_or("");
    let scope_ok = scope
        .strip_prefix("repository:")
        .and_then(|s| s.strip_suffix(":pull"))
        .is_some_and(|name| !name.is_empty());
    if query.get("service").map(String::as_str) != Some(SERVICE) || !scope_ok {
        return oci_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "want service=fake-registry and scope=repository:<name>:pull",
        );
    }
    let token = random_hex();
    fake.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), scope.to_string());
    axum::Json(serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": 300,
    }))
    .into_response()
}

/// `GET /v2/`: any valid token.
async fn base(State(fake): State<Arc<Fake>>, headers: HeaderMap) -> Response {
    if !authorized(&fake, &headers, None) {
        return challenge(&fake, None);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// `GET`/`HEAD /v2/<name>/manifests/<tag or digest>` and `/v2/<name>/blobs/<digest>`.
async fn content(
    State(fake): State<Arc<Fake>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let (name, kind, reference) = if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, "manifest", r)
    } else if let Some((n, r)) = rest.rsplit_once("/blobs/") {
        (n, "blob", r)
    } else {
        return oci_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    };
    if !authorized(&fake, &headers, Some(name)) {
        return challenge(&fake, Some(name));
    }
    if name != REPO {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    }
    let (digest, media_type) = if kind == "manifest" && !reference.starts_with("sha256:") {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fake.layout.join("index.json")).unwrap())
                .unwrap();
        let known = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference);
        if !known {
            return oci_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        }
        let d = tag_descriptor(&fake.layout, reference);
        (
            d["digest"].as_str().unwrap().to_string(),
            d["mediaType"].as_str().unwrap().to_string(),
        )
    } else {
        let media_type = fake.media_types.get(reference).cloned();
        match (kind, media_type) {
            // A manifest by digest must be one the layout's manifests name as a manifest.
            ("manifest", Some(t)) if t.contains("manifest") || t.contains("index") => {
                (reference.to_string(), t)
            }
            ("manifest", _) => {
                return oci_error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                );
            }
            (_, t) => (
                reference.to_string(),
                t.unwrap_or_else(|| "application/octet-stream".to_string()),
            ),
        }
    };
    let Some(bytes) = blob_path(&fake.layout, &digest).and_then(|p| std::fs::read(p).ok()) else {
        return oci_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown");
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, media_type),
            (
                header::HeaderName::from_static("docker-content-digest"),
                digest,
            ),
        ],
        bytes,
    )
        .into_response()
}

/// A plain HTTP/1.1 GET of `path` at `addr`, with an optional `Authorization` value: the
/// status code and the body.
async fn http_get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        request.push_str(&format!("Authorization: {a}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A test's directory, fake registry and image layout.
struct Env {
    dir: tempfile::TempDir,
    reg: FakeRegistry,
}

async fn setup(test: &str) -> Option<Env> {
    if !tools_available(test) {
        return None;
    }
    logs();
    let dir = tempfile::tempdir().unwrap();
    let layout = build_images(dir.path());
    let reg = FakeRegistry::start(&layout).await;
    Some(Env { dir, reg })
}

impl Env {
    /// A store with `auth_file` (none: anonymous), its cache in `cache`.
    fn store(&self, cache: &str, auth_file: Option<PathBuf>) -> ImageStore {
        let settings = ImageSettings {
            cache_dir: Some(self.dir.path().join(cache)),
            insecure_registries: vec![self.reg.host.clone()],
            auth_file,
            ..ImageSettings::default()
        };
        ImageStore::new(&settings, self.dir.path(), &NetworkTimeouts::default()).unwrap()
    }

    /// An auth file with `user:password` (base64 `auth`) for the fake registry.
    fn auth_file(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
                self.reg.host,
                b64(&format!("{USER}:{password}"))
            ),
        )
        .unwrap();
        path
    }

    fn image(&self) -> String {
        format!("{}/{REPO}:v2", self.reg.host)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_a_bearer_token_from_basic_credentials() {
    let Some(env) = setup("pulls_with_a_bearer_token_from_basic_credentials").await else {
        return;
    };
    let logs_before = log_text().len();
    let auth_file = env.auth_file("config.json", PASSWORD);
    let store = env.store("cache", Some(auth_file));
    let pulled = store
        .ensure(&env.image(), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(pulled.rootfs.join("etc/added.txt")).unwrap(),
        "layer two\n"
    );
    assert!(!pulled.rootfs.join("etc/removed-later.txt").exists());
    assert_eq!(
        pulled.digest,
        tag_descriptor(&env.dir.path().join("img"), "v2")["digest"]
            .as_str()
            .unwrap()
    );
    // The token flow ran: the registry serves nothing without a token.
    let asked = env.reg.token_requests();
    assert!(asked >= 1, "the token endpoint was never asked");

    // The issued tokens never show in the logs, nor do the credentials.
    let logs = log_text()[logs_before..].to_string();
    assert!(logs.contains(&env.reg.host), "the logs were not captured");
    let tokens: Vec<String> = env
        .reg
        .state
        .tokens
        .lock()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(!tokens.is_empty());
    for secret in tokens
        .iter()
        .cloned()
        .chain([PASSWORD.to_string(), b64(&format!("{USER}:{PASSWORD}"))])
    {
        assert!(!logs.contains(&secret), "a secret is logged:\n{logs}");
    }

    // The fake itself: a token opens only the repository of its scope.
    let basic = format!("Basic {}", b64(&format!("{USER}:{PASSWORD}")));
    let token_for = |repo: &str| format!("/token?service={SERVICE}&scope=repository:{repo}:pull");
    let (status, body) = http_get(env.reg.addr, &token_for("test/other"), Some(&basic)).await;
    assert_eq!(status, 200, "{body}");
    let other: serde_json::Value = serde_json::from_str(&body).unwrap();
    let other = other["token"].as_str().unwrap().to_string();
    let manifest = format!("/v2/{REPO}/manifests/v2");
    let (status, body) = http_get(env.reg.addr, &manifest, Some(&format!("Bearer {other}"))).await;
    assert_eq!(status, 401, "a token for test/other opened {REPO}: {body}");
    assert!(body.contains("UNAUTHORIZED"), "{body}");
    let (status, _) = http_get(env.reg.addr, &token_for(REPO), None).await;
    assert_eq!(status, 401, "a token without credentials");
    let (status, body) = http_get(env.reg.addr, &token_for(REPO), Some(&basic)).await;
    assert_eq!(status, 200, "{body}");
    let mine: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mine = mine["access_token"].as_str().unwrap().to_string();
    let (status, _) = http_get(env.reg.addr, &manifest, Some(&format!("Bearer {mine}"))).await;
    assert_eq!(status, 200);
    assert_eq!(env.reg.token_requests(), asked + 3);

    // A second store on the same cache needs no registry: IfNotPresent and cached.
    let again = env
        .store("cache", None)
        .ensure(&env.image(), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(again.digest, pulled.digest);
    assert_eq!(env.reg.token_requests(), asked + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_unauthorized_and_never_shown() {
    let Some(env) = setup("a_wrong_password_is_unauthorized_and_never_shown").await else {
        return;
    };
    let logs_before = log_text().len();
    let wrong = "wrong-Pw-0815";
    let auth_file = env.auth_file("config.json", wrong);
    let e = env
        .store("cache", Some(auth_file.clone()))
        .ensure(&env.image(), PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    let debug = format!("{e:?}");
    eprintln!("{text}");
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{text}");
    assert!(text.contains(&env.image()), "{text}");
    assert!(text.contains(&env.reg.host), "{text}");
    assert!(
        text.contains("401") || text.contains("UNAUTHORIZED"),
        "{text}"
    );
    assert!(text.contains("user \"tester\""), "{text}");
    assert!(text.contains(&auth_file.display().to_string()), "{text}");
    assert!(
        env.reg.token_requests() >= 1,
        "the token endpoint was never asked"
    );
    let logs = log_text()[logs_before..].to_string();
    for secret in [wrong.to_string(), b64(&format!("{USER}:{wrong}"))] {
        assert!(!text.contains(&secret), "{text}");
        assert!(!debug.contains(&secret), "{debug}");
        assert!(!logs.contains(&secret), "a secret is logged:\n{logs}");
    }
    // Nothing was cached: a later pull with the right password works.
    let right = env.auth_file("right.json", PASSWORD);
    let pulled = env
        .store("cache", Some(right))
        .ensure(&env.image(), PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert!(pulled.rootfs.join("etc/added.txt").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_file_is_unauthorized_and_says_to_configure_it() {
    let Some(env) = setup("no_auth_file_is_unauthorized_and_says_to_configure_it").await else {
        return;
    };
    let e = env
        .store("cache", None)
        .ensure(&env.image(), PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{text}");
    assert!(text.contains(&env.image()), "{text}");
    assert!(text.contains(&env.reg.host), "{text}");
    assert!(
        text.contains("401") || text.contains("UNAUTHORIZED"),
        "{text}"
    );
    assert!(text.contains("images.authFile"), "{text}");
    assert!(text.contains("no auth file configured"), "{text}");
}
