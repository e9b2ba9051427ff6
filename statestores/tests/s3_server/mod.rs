//! An in-process S3 server for tests: s3s + s3s-fs 0.14.1 on 127.0.0.1 with SigV4 auth
//! (`test-infrastructure.md` §2a). Objects are plain files under `<root>/<bucket>/<key>`.
//! `stop()` aborts the accept loop *and* every open connection; `restart()` binds the same port
//! over the same directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpSocket;

pub const ACCESS_KEY: &str = "AKIAPROMISEDTEST";
pub const SECRET_KEY: &str = "pr0m1sed-s3cret-key-do-not-leak";
pub const BUCKET: &str = "kratix";

pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    /// Strip `If-Match` / `If-None-Match` from PUTs, like servers without conditional writes.
    pub ignore_conditions: bool,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl S3Server {
    /// Start on an OS-chosen port with bucket [`BUCKET`] created.
    pub async fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = Self {
            port: 0,
            root: root.to_owned(),
            ignore_conditions: false,
            task: None,
        };
        s.spawn().await;
        s
    }

    /// Like [`S3Server::start`], but the server ignores conditional-write headers.
    pub async fn start_ignoring_conditions(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = Self {
            port: 0,
            root: root.to_owned(),
            ignore_conditions: true,
            task: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let fs = s3s_fs::FileSystem::new(&self.root).unwrap();
        let mut b = S3ServiceBuilder::new(NoConditions {
            inner: fs,
            strip: self.ignore_conditions,
        });
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        let mut tries = 0;
        loop {
            match sock.bind(format!("127.0.0.1:{}", self.port).parse().unwrap()) {
                Ok(()) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("bind: {e}"),
            }
        }
        let listener = sock.listen(128).unwrap();
        self.port = listener.local_addr().unwrap().port();
        let service = Arc::new(service);
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((sock, _)) = r else { continue };
                        let svc = (*service).clone();
                        conns.spawn(async move {
                            let _ = ConnBuilder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(sock), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    /// `127.0.0.1:<port>`: Kratix's `endpoint` (no scheme).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop serving: the listener and all connections are dropped.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Serve again on the same port over the same directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// A raw client with the right credentials (the "person" and the "reader").
    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(format!("http://{}", self.endpoint()))
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap()
    }

    /// The file behind `key`.
    pub fn file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Forwards the operations the state store uses; optionally drops PUT preconditions.
struct NoConditions {
    inner: s3s_fs::FileSystem,
    strip: bool,
}

#[async_trait::async_trait]
impl s3s::S3 for NoConditions {
    async fn put_object(
        &self,
        mut req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        if self.strip {
            req.input.if_match = None;
            req.input.if_none_match = None;
        }
        self.inner.put_object(req).await
    }

    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        self.inner.get_object(req).await
    }

    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        self.inner.head_object(req).await
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }
}
