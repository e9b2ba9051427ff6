//! The web console (README "Web console"): in Debian's headless Chromium driven by
//! Playwright (`tests/web/console.mjs`) against `promised run` on the quickstart and on the
//! quickstart plus a failing Promise (`testdata/web-failing`); and `promised status --serve`
//! over a state directory, its token check and its refusal of a public address, over HTTP.
//!
//! Screenshots of every page go to `target/tmp/web-console/<mode>/`. Without node, Chromium
//! or `tests/web/node_modules` (`npm ci` in `tests/web`) the browser test is skipped, and
//! fails instead with `PROMISED_REQUIRE_BROWSER=1` (CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::app::{PLATFORM, PROMISE, RENDER, request};
use common::{bwrap_works, copy_dir, git, repo_root};

/// A running `promised` child, killed on drop.
struct Running {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port` with an optional bearer token: (status, body); `None`
/// when nothing answers.
fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.body_mut().read_to_string().unwrap_or_default()))
}

/// Waits until `GET /api/v1/console/overview` satisfies `done` (panics with the log after a
/// generous deadline: a hung daemon must fail the test, not hang it).
fn wait_overview(r: &mut Running, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((200, body)) = get(r.port, "/api/v1/console/overview", None)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && done(&v)
        {
            return v;
        }
        if Instant::now() > deadline || r.child.try_wait().unwrap().is_some() {
            panic!(
                "the console never showed the expected state; log:\n{}",
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn start(args: &[&str], dir: &Path) -> Running {
    let port = free_port();
    let log = dir.join(format!("promised-{port}.log"));
    let listen = format!("127.0.0.1:{port}");
    let mut all: Vec<&str> = args.to_vec();
    let is_status = args.first() == Some(&"status");
    if is_status {
        all.extend(["--serve", &listen]);
    } else {
        all.extend(["--listen", &listen]);
    }
    let child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(&all)
        .env("PROMISED_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut r = Running { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/api/v1/console/version", None).is_none() {
        assert!(
            Instant::now() < deadline && r.child.try_wait().unwrap().is_none(),
            "promised did not serve the console; log:\n{}",
            std::fs::read_to_string(&r.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

/// What the browser test needs, or why it cannot run.
fn browser() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no node".into());
    }
    let pw = repo_root().join("tests/web/node_modules/playwright-core");
    if !pw.is_dir() {
        return Err(format!(
            "{} missing: run `npm ci` in tests/web",
            pw.display()
        ));
    }
    Ok(chromium)
}

/// The quickstart as a Git work tree in `<tmp>/<name>`, plus `extra` (a testdata folder whose
/// `promises/` and `requests/` are added).
fn config_repo(tmp: &Path, name: &str, extra: Option<&str>) -> PathBuf {
    let config = tmp.join(name);
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    if let Some(extra) = extra {
        for sub in ["promises", "requests"] {
            copy_dir(&repo_root().join(extra).join(sub), &config.join(sub));
        }
    }
    git(&config, &["init", "-q"]);
    git(&config, &["add", "-A"]);
    git(
        &config,
        &[
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-qm",
            "initial config",
        ],
    );
    config
}

fn run_browser(chromium: &Path, mode: &str, port: u16, config: &Path) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("web-console")
        .join(mode);
    let _ = std::fs::remove_dir_all(&out);
    let res = Command::new("node")
        .arg(repo_root().join("tests/web/console.mjs"))
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("OUT", &out)
        .env("MODE", mode)
        .env("CONFIG_DIR", config)
        .env("CHROMIUM", chromium)
        .current_dir(repo_root().join("tests/web"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    println!("{stdout}");
    assert!(
        res.status.success(),
        "browser checks failed ({mode}):\n{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn console_in_a_browser_on_the_quickstart_and_a_failing_promise() {
    let chromium = match browser() {
        Ok(c) => c,
        Err(why) if std::env::var("PROMISED_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("PROMISED_REQUIRE_BROWSER=1 but the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    if !bwrap_works() {
        assert!(
            std::env::var("PROMISED_REQUIRE_SANDBOX").as_deref() != Ok("1"),
            "no bubblewrap"
        );
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // The quickstart: every page, links between them, and a live update after a commit.
    let config = config_repo(tmp.path(), "quickstart", None);
    let state = tmp.path().join("state-quickstart");
    let mut d = start(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
    );
    wait_overview(&mut d, |v| {
        v["counts"]["reconciled"] == 3 && !v["lastPass"].is_null()
    });
    let out = run_browser(&chromium, "quickstart", d.port, &config);
    for page in ["overview", "request", "promise", "audit", "overview-live"] {
        assert!(is_png(&out.join(format!("{page}.png"))), "{page}.png");
    }
    drop(d);

    // A failing Promise: the failed request comes first, with its log tail.
    let config = config_repo(tmp.path(), "failing", Some("testdata/web-failing"));
    let state = tmp.path().join("state-failing");
    let mut d = start(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
    );
    wait_overview(&mut d, |v| {
        v["counts"]["failed"] == 1 && v["counts"]["reconciled"] == 4
    });
    let out = run_browser(&chromium, "failing", d.port, &config);
    for page in ["overview-failing", "request-failing", "promise-failing"] {
        assert!(is_png(&out.join(format!("{page}.png"))), "{page}.png");
    }
}

/// The `app` Promise with `sandbox: none` (no bubblewrap needed), reconciled once.
fn reconciled_app(tmp: &Path) -> (PathBuf, PathBuf) {
    reconciled_app_on(tmp, None)
}

/// As [`reconciled_app`], with the state store at `store_url` when given (else the local
/// `state.git`).
fn reconciled_app_on(tmp: &Path, store_url: Option<&str>) -> (PathBuf, PathBuf) {
    let config = tmp.join("config");
    common::app::write_config(&config);
    if let Some(url) = store_url {
        let platform = PLATFORM.replace("url: state.git", &format!("url: {url}\n  branch: main"));
        std::fs::write(config.join("platform/platform.yaml"), platform).unwrap();
    }
    std::fs::write(config.join("requests/a.yaml"), request("a", "team-a")).unwrap();
    let _ = (PROMISE, RENDER);
    let daemon_config = tmp.join("promised.yaml");
    std::fs::write(&daemon_config, "sandbox: none\n").unwrap();
    let state = tmp.join("state");
    let (code, out, err) = common::promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    (state, daemon_config)
}

#[test]
fn status_serve_shows_a_state_directory_with_json_twins() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _) = reconciled_app(tmp.path());
    let s = start(
        &["status", "--state-dir", state.to_str().unwrap()],
        tmp.path(),
    );

    let (code, html) = get(s.port, "/ui/", None).unwrap();
    assert_eq!(code, 200);
    assert!(html.contains("app/team-a/a"), "{html}");
    let (_, json) = get(s.port, "/api/v1/console/overview", None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["counts"]["reconciled"], 1, "{v}");
    assert_eq!(v["requests"]["rows"][0]["key"], "app/team-a/a");

    // The request page and its twin: Destination, path and commit.
    let (code, html) = get(s.port, "/ui/requests/app/team-a/a", None).unwrap();
    assert_eq!(code, 200);
    let (_, json) = get(s.port, "/api/v1/console/requests/app/team-a/a", None).unwrap();
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = &r["placements"][0];
    assert_eq!(p["destination"], "dev", "{r}");
    let commit = p["commit"].as_str().expect("a commit");
    assert!(html.contains(&commit[..12]) && html.contains(p["path"].as_str().unwrap()));
    assert_eq!(r["logs"]["containers"][0]["container"], "render", "{r}");

    // The Promise page's API table, and the audit's trailers.
    let (_, json) = get(s.port, "/api/v1/console/promises/app", None).unwrap();
    let pv: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pv["api"][0]["fields"][1]["path"], "spec.size", "{pv}");
    let (_, json) = get(s.port, "/api/v1/console/audit?resource=app/team-a/a", None).unwrap();
    let a: serde_json::Value = serde_json::from_str(&json).unwrap();
    let outs = a["configCommits"][0]["outputs"]
        .as_array()
        .expect("outputs");
    assert!(outs.iter().any(|o| o["commit"] == commit), "{a}");

    // Unknown objects are 404; the console is read-only.
    assert_eq!(
        get(s.port, "/ui/requests/app/team-a/nope", None).unwrap().0,
        404
    );
    assert_eq!(get(s.port, "/ui/promises/nope", None).unwrap().0, 404);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = agent
        .post(format!("http://127.0.0.1:{}/ui/", s.port))
        .send("x")
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
}

#[test]
fn a_token_guards_the_console_and_public_addresses_need_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _) = reconciled_app(tmp.path());
    // No token: a public address is refused.
    let (code, _, err) = common::promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--serve",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("web.tokenFile"), "{err}");

    let token_file = tmp.path().join("web-token");
    std::fs::write(&token_file, "s3cret-t0ken\n").unwrap();
    let cfg = tmp.path().join("web.yaml");
    std::fs::write(
        &cfg,
        format!("web:\n  tokenFile: {}\n", token_file.display()),
    )
    .unwrap();
    let s = start(
        &[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--daemon-config",
            cfg.to_str().unwrap(),
        ],
        tmp.path(),
    );
    for path in ["/ui/", "/api/v1/console/overview", "/ui/audit"] {
        let (code, body) = get(s.port, path, None).unwrap();
        assert_eq!(code, 401, "{path}");
        assert!(!body.contains("s3cret"), "{body}");
        assert_eq!(get(s.port, path, Some("wrong")).unwrap().0, 401, "{path}");
        assert_eq!(
            get(s.port, path, Some("s3cret-t0ken")).unwrap().0,
            200,
            "{path}"
        );
    }
}

#[test]
fn the_audit_reads_a_remote_state_stores_clone_and_links_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let gd = common::GitDaemon::start(&srv);
    let url = gd.bare_repo("state.git");
    let (state, _) = reconciled_app_on(tmp.path(), Some(&url));
    let head = git(&srv.join("state.git"), &["rev-parse", "main"])
        .trim()
        .to_string();
    let cfg = tmp.path().join("web.yaml");
    std::fs::write(
        &cfg,
        "web:\n  commitUrls:\n    GitStateStore/local: https://git.example/state/commit/{commit}\n  configCommitUrl: https://git.example/config/commit/{commit}\n",
    )
    .unwrap();
    let s = start(
        &[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--daemon-config",
            cfg.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let (_, json) = get(s.port, "/api/v1/console/audit", None).unwrap();
    let a: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(a["stores"][0]["store"], "GitStateStore/local", "{a}");
    assert!(a["stores"][0]["commits"].as_u64().unwrap() >= 1, "{a}");
    let outs: Vec<&serde_json::Value> = a["configCommits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["outputs"].as_array().unwrap())
        .collect();
    let top = outs
        .iter()
        .find(|o| o["commit"] == head.as_str())
        .expect("the remote head");
    assert_eq!(
        top["url"],
        format!("https://git.example/state/commit/{head}").as_str()
    );
    assert!(
        top["trailers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t[0] == "Promised-Resource" && t[1] == "app/team-a/a"),
        "{top}"
    );
    // The request page links the same commit; the state store URL shows no user-info.
    let (_, html) = get(s.port, "/ui/requests/app/team-a/a", None).unwrap();
    assert!(
        html.contains(&format!("https://git.example/state/commit/{head}")),
        "{html}"
    );
    let (_, html) = get(s.port, "/ui/audit", None).unwrap();
    assert!(html.contains(&format!("id=\"out-{head}\"")), "{html}");
}
