//! Test infrastructure: real git servers on 127.0.0.1 (`test-infrastructure.md` §1a, §1b)
//! and a "person" who uses the git CLI.

#![allow(dead_code, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Run git with an isolated config; panic with stderr on failure; return stdout.
pub fn git(dir: Option<&Path>, args: &[&str]) -> String {
    let out = git_cmd(dir, args).output().expect("spawn git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn git_cmd(dir: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    c.args([
        "-c",
        "user.name=Person",
        "-c",
        "user.email=person@example.com",
        "-c",
        "init.defaultBranch=main",
    ])
    .args(args)
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_TERMINAL_PROMPT", "0")
    .stdin(Stdio::null());
    c
}

pub fn init_bare(path: &Path) {
    git(
        None,
        &["init", "-q", "--bare", "-b", "main", path.to_str().unwrap()],
    );
}

/// Serves `base` over git:// with one `git daemon --inetd` per connection. Returns the port.
pub fn start_git_daemon(base: PathBuf) -> u16 {
    serve_git_daemon(base, &["--enable=receive-pack"])
}

/// Like [`start_git_daemon`] but read-only: `receive-pack` (push) is not enabled, so the daemon
/// answers a push with "service not enabled".
pub fn start_read_only_git_daemon(base: PathBuf) -> u16 {
    serve_git_daemon(base, &[])
}

fn serve_git_daemon(base: PathBuf, extra: &'static [&'static str]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (Ok(input), output) = (stream.try_clone(), stream) else {
                continue;
            };
            let child = Command::new("git")
                .args(["daemon", "--inetd", "--export-all", "--informative-errors"])
                .args(extra)
                .arg(format!("--base-path={}", base.display()))
                .arg(&base)
                .stdin(Stdio::from(OwnedFd::from(input)))
                .stdout(Stdio::from(OwnedFd::from(output)))
                .spawn();
            if let Ok(mut child) = child {
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
            }
        }
    });
    port
}

const GITHTTP: &str = r#"#!/usr/bin/env python3
import base64, os, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ROOT, PORT, USER, PASS = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
EXPECTED = "Basic " + base64.b64encode(f"{USER}:{PASS}".encode()).decode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
    def _handle(self):
        if self.headers.get("Authorization") != EXPECTED:
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0"); self.end_headers(); return
        path, _, query = self.path.partition("?")
        if os.environ.get("GITHTTP_DENY_PUSH") and ("git-receive-pack" in path or "git-receive-pack" in query):
            self.send_response(403); self.send_header("Content-Length", "0"); self.end_headers(); return
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": ROOT, "GIT_HTTP_EXPORT_ALL": "1",
               "REMOTE_USER": USER,
               "REMOTE_ADDR": self.client_address[0], "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", "")}
        body = b""
        if "Content-Length" in self.headers:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0: self.rfile.readline(); break
                chunks.append(self.rfile.read(size)); self.rfile.readline()
            body = b"".join(chunks)
        env["CONTENT_LENGTH"] = str(len(body))
        out = subprocess.run(["git", "http-backend"], input=body, env=env, stdout=subprocess.PIPE).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, rest = out.partition(sep)
        status, hdrs = 200, []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status": status = int(v.strip().split()[0])
            elif k: hdrs.append((k, v.strip()))
        self.send_response(status)
        for k, v in hdrs: self.send_header(k, v)
        self.send_header("Content-Length", str(len(rest))); self.end_headers(); self.wfile.write(rest)
    do_GET = do_POST = _handle
srv = ThreadingHTTPServer(("127.0.0.1", PORT), H)
if len(sys.argv) > 6:  # CERT KEY: serve https
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"PORT={srv.server_address[1]}", flush=True)
srv.serve_forever()
"#;

/// The Python `git http-backend` server with basic auth; killed on drop.
pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    pub fn start(root: &Path, user: &str, pass: &str) -> Self {
        Self::start_with(root, user, pass, &[])
    }

    /// Like [`HttpServer::start`], but every request for the `git-receive-pack` service
    /// (push) is answered `403 Forbidden`, as a hosted server does for a read-only token.
    pub fn start_read_only(root: &Path, user: &str, pass: &str) -> Self {
        std::fs::write(root.join(".deny-push"), "").unwrap();
        Self::start_with(root, user, pass, &[])
    }

    /// Serve https with a fresh self-signed certificate for 127.0.0.1.
    pub fn start_tls(root: &Path, user: &str, pass: &str) -> Self {
        let (cert, key) = (root.join("cert.pem"), root.join("key.pem"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl makes the test certificate (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_with(
            root,
            user,
            pass,
            &[cert.to_str().unwrap(), key.to_str().unwrap()],
        )
    }

    fn start_with(root: &Path, user: &str, pass: &str, extra: &[&str]) -> Self {
        let script = root.join("githttp.py");
        std::fs::write(&script, GITHTTP).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(root)
            .arg("0")
            .arg(user)
            .arg(pass)
            .args(extra)
            .env_remove("GITHTTP_DENY_PUSH")
            .envs(
                root.join(".deny-push")
                    .exists()
                    .then_some(("GITHTTP_DENY_PUSH", "1")),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT=")
            .expect("PORT line")
            .parse()
            .unwrap();
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person's working clone of the state store.
pub struct Person {
    pub dir: tempfile::TempDir,
}

impl Person {
    pub fn clone(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(
            None,
            &[
                "clone",
                "-q",
                "-b",
                "main",
                url,
                dir.path().join("w").to_str().unwrap(),
            ],
        );
        Person { dir }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("w")
    }
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    pub fn delete(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap();
    }
    pub fn commit_and_push(&self, msg: &str) {
        let w = self.path();
        git(Some(&w), &["add", "-A"]);
        git(Some(&w), &["commit", "-q", "-m", msg]);
        git(Some(&w), &["push", "-q", "origin", "HEAD:main"]);
    }
}

/// Inspect the branch of a repository URL with a fresh clone.
pub struct View {
    pub dir: tempfile::TempDir,
}

impl View {
    pub fn of(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(
            None,
            &[
                "clone",
                "-q",
                "-b",
                "main",
                url,
                dir.path().join("w").to_str().unwrap(),
            ],
        );
        View { dir }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("w")
    }
    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path().join(rel)).ok()
    }
    pub fn head(&self) -> String {
        git(Some(&self.path()), &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }
    pub fn commit_count(&self) -> usize {
        git(Some(&self.path()), &["rev-list", "--count", "HEAD"])
            .trim()
            .parse()
            .unwrap()
    }
    pub fn message(&self, rev: &str) -> String {
        git(Some(&self.path()), &["log", "-1", "--format=%B", rev])
    }
    pub fn author(&self) -> String {
        git(Some(&self.path()), &["log", "-1", "--format=%an <%ae>"])
            .trim()
            .to_owned()
    }
    pub fn is_ancestor(&self, a: &str, b: &str) -> bool {
        git_cmd(Some(&self.path()), &["merge-base", "--is-ancestor", a, b])
            .status()
            .unwrap()
            .success()
    }
}

/// `ls-remote` head of main, if any.
pub fn remote_head(url: &str) -> Option<String> {
    let out = git(None, &["ls-remote", url, "refs/heads/main"]);
    out.split_whitespace().next().map(str::to_owned)
}

/// A throwaway `sshd` on 127.0.0.1 (`test-infrastructure.md` §1c); killed on drop.
/// `None` when openssh-server is not installed.
pub struct SshServer {
    child: Child,
    pub port: u16,
    pub user: String,
    /// Private key accepted by the server.
    pub client_key: String,
    /// A `known_hosts` line for the server.
    pub known_hosts: String,
}

impl SshServer {
    pub fn start(dir: &Path) -> Option<Self> {
        Self::start_with(dir, "")
    }

    /// [`SshServer::start`] with `extra` appended to `sshd_config` (for example a
    /// `ForceCommand`).
    pub fn start_with(dir: &Path, extra: &str) -> Option<Self> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            return None;
        }
        std::fs::create_dir_all("/run/sshd").ok()?;
        for k in ["hostkey", "clientkey"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(k))
                .output()
                .ok()?;
            assert!(out.status.success());
        }
        std::fs::copy(dir.join("clientkey.pub"), dir.join("authorized_keys")).unwrap();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/hostkey\nPidFile {d}/pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                 SetEnv PATH={path}\n{extra}",
                d = dir.display(),
                path = std::env::var("PATH").unwrap_or_default()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let host_pub = std::fs::read_to_string(dir.join("hostkey.pub")).unwrap();
        Some(SshServer {
            child,
            port,
            user,
            client_key: std::fs::read_to_string(dir.join("clientkey")).unwrap(),
            known_hosts: format!("[127.0.0.1]:{port} {}", host_pub.trim()),
        })
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on 127.0.0.1 that accepts every connection and never sends a byte: the sockets
/// are held open until the server is dropped.
pub struct HungServer {
    pub port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HungServer {
    pub fn start() -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = s {
                    held.push(s);
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        HungServer {
            port,
            accepted,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HungServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it ends and closes the held sockets.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A `git://` front of the git daemon on `upstream`: fetches (`git-upload-pack`) are relayed,
/// a push (`git-receive-pack`) is accepted and never answered. Returns the port.
pub fn start_push_hanging_git_proxy(upstream: u16) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                // The request is the first pkt-line: `<4 hex length>git-<service> <path>\0…`.
                let mut len = [0u8; 4];
                if client.read_exact(&mut len).is_err() {
                    return;
                }
                let n = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut request = vec![0u8; n.saturating_sub(4)];
                if client.read_exact(&mut request).is_err() {
                    return;
                }
                if request.starts_with(b"git-receive-pack") {
                    // Hold the connection until the client goes away.
                    let _ = std::io::copy(&mut client, &mut std::io::sink());
                    return;
                }
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                if server.write_all(&len).is_err() || server.write_all(&request).is_err() {
                    return;
                }
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    port
}

/// A server on 127.0.0.1 that answers every connection with the start of a long pkt-line
/// and then one more byte every 200 ms, forever: it is never silent for long, so only a
/// whole-operation deadline ends a fetch from it. Returns the port.
pub fn start_trickling_server() -> u16 {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                if s.write_all(b"0fff").is_err() {
                    return;
                }
                while s.write_all(b"a").is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            });
        }
    });
    port
}

/// An `http://` front of the Git HTTP server on `upstream`: fetches are relayed, a push
/// (`…?service=git-receive-pack`, always a new connection of `git-remote-http`) is accepted
/// and never answered. Returns the port.
pub fn start_push_hanging_http_proxy(upstream: u16) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut client = client;
                // The request line decides.
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while !line.ends_with(b"\r\n") && line.len() < 8192 {
                    if client.read_exact(&mut b).is_err() {
                        return;
                    }
                    line.push(b[0]);
                }
                if line.windows(16).any(|w| w == b"git-receive-pack") {
                    let _ = std::io::copy(&mut client, &mut std::io::sink());
                    return;
                }
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                if server.write_all(&line).is_err() {
                    return;
                }
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut server, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    port
}
