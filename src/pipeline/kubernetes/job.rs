//! The API calls of one Pipeline Job (module docs of [`super`]): create the input Secret and
//! the Job (adopting an existing one), watch it to its end, find its pod, read a log, delete
//! both. Every call is one of [`crate::cluster::access::JOB_RUNTIME`].

use futures_util::TryStreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};

use super::super::{Error, PipelineResult, RanImage, RunnerConfig};
use super::manifest::{JobObjects, OUTPUT_CONTAINER};
use crate::model::Pipeline;

/// Lines of a failed container's log put into the error.
const TAIL_LINES: i64 = 20;

/// `limitBytes` of the output container's log read: room for the base64 of the compressed
/// archive of `cap` bytes of output plus metadata.
pub(super) fn log_limit(cap: u64) -> u64 {
    cap.saturating_mul(2).saturating_add(1 << 20)
}

/// The calls of one Job: its client, namespace and name, and what errors name.
pub(super) struct Calls {
    pub client: kube::Client,
    pub namespace: String,
    pub name: String,
    pub promise: String,
    pub pipeline: String,
}

/// How a Job ended.
enum End {
    Complete,
    Failed { reason: String, message: String },
}

impl Calls {
    /// Creates (or adopts) the Job of `objects`, waits for its end and returns the output
    /// container's log; a failed Job is an error with the failed container's log tail. The Job
    /// and the Secret are deleted once read. Records the images that ran in `res`.
    pub async fn run(
        &self,
        objects: &JobObjects,
        cfg: &RunnerConfig,
        p: &Pipeline,
        res: &mut PipelineResult,
    ) -> Result<String, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pp = PostParams::default();
        match secrets.create(&pp, &objects.secret).await {
            Ok(_) => {}
            // Same name, same content: a Secret left by an earlier run of the same inputs.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(self.api_error("create", "", "secrets", "Secret", e)),
        }
        match jobs.create(&pp, &objects.job).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(
                    promise = self.promise,
                    pipeline = self.pipeline,
                    job = self.name,
                    "adopting the existing Job of the same inputs"
                );
            }
            Err(e) => return Err(self.api_error("create", "batch", "jobs", "Job", e)),
        }
        let job = self.wait(&jobs).await?;
        let end = job_end(&job).unwrap_or(End::Complete);
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={}", self.name)))
            .await
            .map_err(|e| self.api_error("list", "", "pods", "Pods", e))?;
        let pod = pick_pod(list.items, matches!(end, End::Complete));
        let users: Vec<(&str, &str)> = p
            .spec
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_str()))
            .collect();
        if let Some(pod) = &pod {
            res.images = ran_images(pod, &users);
        }
        let pod_name = pod.as_ref().and_then(|p| p.metadata.name.clone());
        let result = match end {
            End::Complete => {
                let Some(pod_name) = pod_name else {
                    self.cleanup(&jobs, &secrets).await;
                    return Err(Error::JobOutput {
                        pipeline: self.pipeline.clone(),
                        job: self.name.clone(),
                        reason: "the Job completed but its pod is gone, and with it the output"
                            .into(),
                    });
                };
                let lp = LogParams {
                    container: Some(OUTPUT_CONTAINER.into()),
                    limit_bytes: Some(log_limit(cfg.output_cap_bytes) as i64),
                    ..Default::default()
                };
                pods.logs(&pod_name, &lp).await.map_err(|e| {
                    self.api_error(
                        "get",
                        "",
                        "pods/log",
                        &format!("log of Pod {pod_name:?} container {OUTPUT_CONTAINER:?}"),
                        e,
                    )
                })
            }
            End::Failed { reason, message } => {
                let failed = pod.as_ref().and_then(failed_container);
                let log_tail = match (&pod_name, &failed) {
                    (Some(pod_name), Some(f)) => {
                        let lp = LogParams {
                            container: Some(f.name.clone()),
                            tail_lines: Some(TAIL_LINES),
                            previous: f.previous,
                            ..Default::default()
                        };
                        match pods.logs(pod_name, &lp).await {
                            Ok(l) => l,
                            Err(e) => format!("(its log could not be read: {e})"),
                        }
                    }
                    _ => String::new(),
                };
                let container = failed.as_ref().map(|f| f.name.clone());
                Err(if reason == "DeadlineExceeded" {
                    let secs = job
                        .spec
                        .as_ref()
                        .and_then(|s| s.active_deadline_seconds)
                        .unwrap_or(cfg.timeout.as_secs() as i64);
                    Error::JobTimeout {
                        pipeline: self.pipeline.clone(),
                        job: self.name.clone(),
                        after: std::time::Duration::from_secs(secs.max(0) as u64),
                        container,
                        log_tail,
                    }
                } else {
                    let detail = failed
                        .as_ref()
                        .map(|f| f.reason.clone())
                        .filter(|r| !r.is_empty())
                        .unwrap_or(message);
                    Error::JobFailed {
                        pipeline: self.pipeline.clone(),
                        job: self.name.clone(),
                        container,
                        exit_code: failed.as_ref().and_then(|f| f.exit_code),
                        reason: if detail.is_empty() {
                            reason
                        } else {
                            format!("{reason}: {detail}")
                        },
                        log_tail: log_tail.into(),
                    }
                })
            }
        };
        self.cleanup(&jobs, &secrets).await;
        result
    }

    /// GET the Job, then watch it (fieldSelector `metadata.name`) until it has ended; GET
    /// again whenever a watch ends.
    async fn wait(&self, jobs: &Api<Job>) -> Result<Job, Error> {
        loop {
            let job = jobs
                .get(&self.name)
                .await
                .map_err(|e| self.api_error("get", "batch", "jobs", "Job", e))?;
            if job_end(&job).is_some() {
                return Ok(job);
            }
            let rv = job.metadata.resource_version.clone().unwrap_or_default();
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={}", self.name))
                .timeout(290);
            let stream = jobs
                .watch(&wp, &rv)
                .await
                .map_err(|e| self.api_error("watch", "batch", "jobs", "Job", e))?;
            futures_util::pin_mut!(stream);
            let mut events = 0usize;
            while let Some(ev) = stream
                .try_next()
                .await
                .map_err(|e| self.api_error("watch", "batch", "jobs", "Job", e))?
            {
                events += 1;
                match ev {
                    WatchEvent::Added(j) | WatchEvent::Modified(j) if job_end(&j).is_some() => {
                        return Ok(j);
                    }
                    WatchEvent::Deleted(_) => {
                        return Err(Error::KubeApi {
                            promise: self.promise.clone(),
                            pipeline: self.pipeline.clone(),
                            call: self.call("watch", "Job"),
                            code: None,
                            message: "the Job was deleted before it finished".into(),
                            hint: String::new(),
                        });
                    }
                    // A watch error (e.g. 410 Gone: the resourceVersion is too old): GET again.
                    WatchEvent::Error(_) => break,
                    _ => {}
                }
            }
            if events == 0 {
                // A watch that ends at once: do not hammer the API.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    /// Deletes the Job (its pods in the background) and the Secret; a failure is logged, the
    /// Job's `ttlSecondsAfterFinished` removes it later.
    async fn cleanup(&self, jobs: &Api<Job>, secrets: &Api<Secret>) {
        if let Err(e) = jobs.delete(&self.name, &DeleteParams::background()).await
            && !is_not_found(&e)
        {
            let e = self.api_error("delete", "batch", "jobs", "Job", e);
            tracing::warn!(error = %e, "could not delete the pipeline Job");
        }
        if let Err(e) = secrets.delete(&self.name, &DeleteParams::default()).await
            && !is_not_found(&e)
        {
            let e = self.api_error("delete", "", "secrets", "Secret", e);
            tracing::warn!(error = %e, "could not delete the pipeline input Secret");
        }
    }

    fn call(&self, verb: &str, what: &str) -> String {
        format!(
            "{verb} {what} {:?} in namespace {:?}",
            self.name, self.namespace
        )
    }

    /// A failed call as [`Error::KubeApi`]; a 403 names the verb and resource to grant.
    fn api_error(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        what: &str,
        e: kube::Error,
    ) -> Error {
        let call = if what.starts_with("log of") || what == "Pods" {
            format!("{verb} {what} in namespace {:?}", self.namespace)
        } else {
            self.call(verb, what)
        };
        let (code, message) = match &e {
            kube::Error::Api(s) => (Some(s.code), format!("{} ({})", s.message, s.code)),
            other => (None, other.to_string()),
        };
        let hint = if code == Some(403) {
            let gr = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            };
            format!(
                "; the daemon's ServiceAccount needs the verb {verb:?} on {gr:?} in namespace {:?} (the Role in deploy/ grants the Kubernetes Job runtime's calls)",
                self.namespace
            )
        } else {
            String::new()
        };
        Error::KubeApi {
            promise: self.promise.clone(),
            pipeline: self.pipeline.clone(),
            call,
            code,
            message,
            hint,
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// `Complete` or `Failed` (condition status `True`), `None` while the Job runs.
fn job_end(job: &Job) -> Option<End> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" => return Some(End::Complete),
            "Failed" => {
                return Some(End::Failed {
                    reason: c.reason.clone().unwrap_or_else(|| "Failed".into()),
                    message: c.message.clone().unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    None
}

/// The Job's pod to read: a succeeded one for a complete Job, else the newest.
fn pick_pod(mut pods: Vec<Pod>, complete: bool) -> Option<Pod> {
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.clone();
        t(a).cmp(&t(b))
    });
    let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
    if complete
        && let Some(i) = pods
            .iter()
            .rposition(|p| phase(p).as_deref() == Some("Succeeded"))
    {
        return Some(pods.swap_remove(i));
    }
    pods.pop()
}

/// The container that failed a pod: the first whose (current or last) termination has a
/// non-zero exit code, else the first waiting with a reason (e.g. `ErrImagePull`).
struct Failed {
    name: String,
    exit_code: Option<i32>,
    reason: String,
    /// Its current run is not the failed one: read the previous run's log.
    previous: bool,
}

fn statuses(pod: &Pod) -> Vec<&ContainerStatus> {
    let Some(s) = &pod.status else {
        return Vec::new();
    };
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .collect()
}

fn failed_container(pod: &Pod) -> Option<Failed> {
    let all = statuses(pod);
    for s in &all {
        let current = s.state.as_ref().and_then(|st| st.terminated.as_ref());
        let last = s.last_state.as_ref().and_then(|st| st.terminated.as_ref());
        for (t, previous) in [(current, false), (last, true)] {
            if let Some(t) = t
                && t.exit_code != 0
            {
                return Some(Failed {
                    name: s.name.clone(),
                    exit_code: Some(t.exit_code),
                    reason: t.reason.clone().unwrap_or_default(),
                    previous: previous && current.is_none(),
                });
            }
        }
    }
    all.iter().find_map(|s| {
        let w = s.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone()?;
        Some(Failed {
            name: s.name.clone(),
            exit_code: None,
            reason: match &w.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            },
            previous: false,
        })
    })
}

/// The image each Pipeline container ran, from the pod's `imageID`s (`…@sha256:…`).
fn ran_images(pod: &Pod, users: &[(&str, &str)]) -> Vec<RanImage> {
    let all = statuses(pod);
    users
        .iter()
        .filter_map(|(name, image)| {
            let s = all.iter().find(|s| s.name == *name)?;
            let id = s.image_id.as_str();
            let at = id.find("sha256:")?;
            Some(RanImage {
                container: s.name.clone(),
                image: image.to_string(),
                digest: id[at..].to_string(),
            })
        })
        .collect()
}
