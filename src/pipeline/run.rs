//! One Pipeline run: its contract directories and `KRATIX_*` environment, every container's
//! `env` resolved before the first starts, each container run in turn (bubblewrap or
//! `sandbox: none`, with image overrides and the network rule), then what Kratix's
//! `work-writer` and `status-writer` do: read `workflow-control.yaml`, collect the output and
//! parse `destination-selectors.yaml` and `status.yaml` (kratix-contract.md §2.5–§2.8). A
//! command that cannot start because its script has CRLF line endings is named as such.

use std::path::PathBuf;

use super::oci::image_invocation;
use super::{
    Action, ContainerLog, Error, Mount, NETWORK_ANNOTATION, Outcome, PipelineResult, RanImage,
    RunnerConfig, SandboxMode, WorkflowInput, contract, env, kubeapi, metadata, output, overrides,
    resident, runtime, sandbox,
};
use crate::model::Pipeline;

pub(super) async fn run_pipeline(
    cfg: &RunnerConfig,
    layout: &sandbox::HostLayout,
    input: &WorkflowInput<'_>,
    object_yaml: &str,
    p: &Pipeline,
    status: &mut serde_json::Map<String, serde_json::Value>,
) -> PipelineResult {
    let mut res = PipelineResult {
        name: p.metadata.name.clone(),
        outcome: Outcome::Succeeded,
        outputs: Vec::new(),
        selectors: Vec::new(),
        status: None,
        logs: Vec::new(),
        images: Vec::new(),
    };
    let mut slot = ApiSlot { status, api: None };
    let r = run_pipeline_inner(cfg, layout, input, object_yaml, p, &mut res, &mut slot).await;
    // Status the Pipeline published stays, whatever the outcome (Kratix patches at once).
    if let Some(api) = slot.api {
        *status = api.finish();
    }
    if let Err(error) = r {
        res.outcome = Outcome::Failed { error };
        res.outputs.clear();
        res.selectors.clear();
    }
    res
}

/// The pipeline API of one Pipeline run: the status it starts from, and the API once started.
struct ApiSlot<'a> {
    status: &'a serde_json::Map<String, serde_json::Value>,
    api: Option<kubeapi::RunApi>,
}

/// Starts the pipeline API for this Pipeline when the runner serves one and this is a
/// resource workflow ([`kubeapi`]); a failure to start is logged and the Pipeline runs
/// without it.
async fn start_api(
    cfg: &RunnerConfig,
    input: &WorkflowInput<'_>,
    p: &Pipeline,
    status: &serde_json::Map<String, serde_json::Value>,
    dir: &std::path::Path,
    pipeline_network: bool,
) -> Option<kubeapi::RunApi> {
    let hub = cfg.kube_api.as_ref()?;
    if input.workflow_type != super::WorkflowType::Resource {
        return None;
    }
    // Containers the image runtime runs do not get it (README "Pipeline API").
    if cfg.images.is_some()
        && p.spec
            .containers
            .iter()
            .all(|c| !cfg.image_overrides.contains_key(&c.image))
    {
        return None;
    }
    let host_port = cfg.sandbox == SandboxMode::None
        || cfg.allow_network
        || pipeline_network
        || p.spec
            .containers
            .iter()
            .any(|c| cfg.image_overrides.get(&c.image).is_some_and(|o| o.network));
    match hub.0.start(input, status, dir, host_port).await {
        Ok(api) => Some(api),
        Err(e) => {
            tracing::warn!(
                pipeline = p.metadata.name.as_str(),
                error = %e,
                "the pipeline API cannot start; the pipeline runs without it"
            );
            None
        }
    }
}

/// What the pipeline API adds to a sandboxed container with `network` (or without): its
/// mounts, the variables (first, so the container's own win) and, without network, the
/// command wrapped in `promised adapter kube-forward`.
fn api_wiring(
    api: &kubeapi::RunApi,
    network: bool,
    env: &mut Vec<(String, String)>,
    argv: &mut Vec<String>,
) -> Vec<Mount> {
    let Some(kubeconfig) = (match (network, &api.binary) {
        (true, _) => api.host_kubeconfig.clone(),
        (false, Some(_)) => Some(api.kubeconfig.clone()),
        // No forwarder to run: the API is out of reach without network.
        (false, None) => None,
    }) else {
        return Vec::new();
    };
    let home = env
        .iter()
        .rev()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v.clone());
    let mut first = vec![("KUBECONFIG".to_string(), kubeapi::KUBECONFIG.to_string())];
    if home.is_none() {
        first.push(("HOME".into(), kubeapi::DEFAULT_HOME.into()));
    }
    let home = home.unwrap_or_else(|| kubeapi::DEFAULT_HOME.into());
    env.splice(0..0, first);
    let ro = |host: &std::path::Path, target: String| Mount {
        host: host.to_path_buf(),
        target,
        writable: false,
    };
    let mut mounts = vec![
        ro(&kubeconfig, kubeapi::KUBECONFIG.into()),
        ro(
            &kubeconfig,
            format!("{}/.kube/config", home.trim_end_matches('/')),
        ),
    ];
    if let (false, Some(binary)) = (network, &api.binary) {
        mounts.push(Mount {
            host: api.socket.clone(),
            target: kubeapi::SOCKET.into(),
            writable: true,
        });
        mounts.push(ro(binary, kubeapi::BINARY.into()));
        let mut wrapped = vec![
            kubeapi::BINARY.to_string(),
            "adapter".into(),
            "kube-forward".into(),
            "--".into(),
        ];
        wrapped.append(argv);
        *argv = wrapped;
    }
    mounts
}

async fn run_pipeline_inner(
    cfg: &RunnerConfig,
    layout: &sandbox::HostLayout,
    input: &WorkflowInput<'_>,
    object_yaml: &str,
    p: &Pipeline,
    res: &mut PipelineResult,
    slot: &mut ApiSlot<'_>,
) -> Result<(), Error> {
    let pname = p.metadata.name.as_str();
    let dirs = contract::PipelineDirs::create(&cfg.work_dir, object_yaml)?;
    let base_env = contract::kratix_env(
        input.workflow_type,
        input.action,
        &input.promise_name,
        pname,
        &input.object,
        &input.crd_plural,
    );
    let pipeline_network = p
        .metadata
        .annotations
        .get(NETWORK_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    slot.api = start_api(
        cfg,
        input,
        p,
        slot.status,
        &dirs.root().join("kubeapi"),
        pipeline_network,
    )
    .await;
    // Every container's environment before the first starts: a variable that cannot be
    // resolved fails the Pipeline before anything ran.
    let pod = env::PodMeta::new(
        input.workflow_type,
        input.action,
        &input.promise_name,
        &input.object,
        input.pipeline_namespace.as_deref(),
        p,
    );
    let mut envs = Vec::with_capacity(p.spec.containers.len());
    let mut secrets = Vec::new();
    for c in &p.spec.containers {
        let mut env = base_env.clone();
        let own = contract::container_env(&input.promise_name, pname, c, &pod, &cfg.env_sources)?;
        secrets.extend(secret_values(c, &own));
        env.extend(own);
        envs.push(env);
    }
    for (ci, (c, env)) in p.spec.containers.iter().zip(envs).enumerate() {
        let over = cfg.image_overrides.get(&c.image);
        // An image override wins over a pull; without one, the image runtime runs the image
        // when the daemon config has `images:` (README "Images").
        let image_run = match (over, &cfg.images) {
            (None, Some(images)) => Some(
                image_invocation(cfg, images, pname, c, &env, &dirs, input, pipeline_network)
                    .await?,
            ),
            _ => None,
        };
        let process_runtime = image_run.is_none();
        let (inv, sandbox_note, command0, mounts) = if let Some(run) = image_run {
            res.images.push(RanImage {
                container: c.name.clone(),
                image: c.image.clone(),
                digest: run.digest,
            });
            (run.invocation, run.note, run.command0, &[][..])
        } else {
            let command = match (&c.command, over) {
                (Some(cmd), _) if !cmd.is_empty() => cmd.clone(),
                (_, Some(o)) if !o.command.is_empty() => o.command.clone(),
                _ => {
                    return Err(Error::NoCommand {
                        pipeline: pname.into(),
                        container: c.name.clone(),
                        image: c.image.clone(),
                    });
                }
            };
            let mut argv = command;
            argv.extend(c.args.clone().unwrap_or_default());
            let command0 = argv[0].clone();
            let network =
                cfg.allow_network || pipeline_network || over.map(|o| o.network).unwrap_or(false);
            let mounts: &[Mount] = over.map(|o| o.mounts.as_slice()).unwrap_or(&[]);
            // The override stands in for the image: its `env` comes first (the `KRATIX_*`
            // variables and the container's own `env` win), its `workingDir` when the
            // container has none.
            let mut env: Vec<(String, String)> = over
                .into_iter()
                .flat_map(|o| o.env_pairs())
                .chain(env)
                .collect();
            let working_dir = c
                .working_dir
                .as_deref()
                .or(over.and_then(|o| o.working_dir.as_deref()));
            let (inv, sandbox_note) = match cfg.sandbox {
                SandboxMode::Bwrap => {
                    let (input_dir, output_dir, meta_dir) =
                        (dirs.input(), dirs.output(), dirs.metadata());
                    sandbox::check_mounts(&c.image, mounts, &cfg.hidden)?;
                    // Fresh scratch directories for this container run, bound after the
                    // override's mounts (so one may lie below a mount).
                    let scratch = match over {
                        Some(o) => overrides::scratch_mounts(o, dirs.root(), ci)?,
                        None => Vec::new(),
                    };
                    let scratch_note: String = scratch
                        .iter()
                        .map(|m| format!(", private scratch {}", m.target))
                        .collect();
                    let api_mounts = match slot.api.as_ref() {
                        Some(api) => api_wiring(api, network, &mut env, &mut argv),
                        None => Vec::new(),
                    };
                    let all_mounts: Vec<Mount> = mounts
                        .iter()
                        .cloned()
                        .chain(scratch)
                        .chain(api_mounts)
                        .collect();
                    let spec = sandbox::SandboxSpec {
                        input: &input_dir,
                        output: &output_dir,
                        metadata: &meta_dir,
                        promise_dir: input.promise_dir.as_deref(),
                        mounts: &all_mounts,
                        network,
                        working_dir,
                        env: &env,
                        argv: &argv,
                        hidden: &cfg.hidden,
                    };
                    let note = format!(
                        "; sandbox: network {}, read-only root file system, writable only /kratix/output, /kratix/metadata, a private /tmp{scratch_note}",
                        if network { "on" } else { "off" }
                    );
                    (
                        runtime::Invocation {
                            program: cfg.bwrap.clone().into_os_string(),
                            args: sandbox::bwrap_args(layout, &spec),
                            // Through bwrap's own environment, which it passes on: values never
                            // appear on a command line (`/proc/<pid>/cmdline` is world-readable).
                            env: sandbox::bwrap_env(&spec),
                            cwd: None,
                            timeout: cfg.timeout,
                            log_cap: cfg.log_cap_bytes,
                        },
                        note,
                    )
                }
                SandboxMode::None => {
                    if !mounts.is_empty() || over.is_some_and(|o| !o.scratch.is_empty()) {
                        return Err(Error::MountsNeedSandbox {
                            image: c.image.clone(),
                        });
                    }
                    if let (Some(first), Some(pd)) = (argv.first_mut(), &input.promise_dir)
                        && let Some(rest) = first.strip_prefix("/promise/")
                    {
                        *first = pd.join(rest).to_string_lossy().into_owned();
                    }
                    let mut env = env;
                    env.insert(0, ("PATH".into(), sandbox::DEFAULT_PATH.into()));
                    if let Some(kc) = slot.api.as_ref().and_then(|a| a.host_kubeconfig.as_ref()) {
                        env.insert(1, ("KUBECONFIG".into(), kc.to_string_lossy().into_owned()));
                    }
                    for (k, v) in [
                        ("KRATIX_INPUT_DIR", dirs.input()),
                        ("KRATIX_OUTPUT_DIR", dirs.output()),
                        ("KRATIX_METADATA_DIR", dirs.metadata()),
                    ] {
                        env.push((k.into(), v.to_string_lossy().into_owned()));
                    }
                    if let Some(pd) = &input.promise_dir {
                        env.push((
                            "KRATIX_PROMISE_DIR".into(),
                            pd.to_string_lossy().into_owned(),
                        ));
                    }
                    let mut args: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
                    let program = args.remove(0);
                    (
                        runtime::Invocation {
                            program,
                            args,
                            env,
                            cwd: Some(
                                working_dir
                                    .map(PathBuf::from)
                                    .unwrap_or_else(|| dirs.root().to_path_buf()),
                            ),
                            timeout: cfg.timeout,
                            log_cap: cfg.log_cap_bytes,
                        },
                        "; sandbox: none".to_string(),
                    )
                }
            };
            (inv, sandbox_note, command0, mounts)
        };
        let mut finished =
            start(cfg, &inv, dirs.root(), ci)
                .await
                .map_err(|e| Error::SpawnFailed {
                    pipeline: pname.into(),
                    container: c.name.clone(),
                    message: if e.kind() == std::io::ErrorKind::NotFound {
                        format!(
                            "{e}{}",
                            crlf_shebang_hint(&command0, input.promise_dir.as_deref(), mounts)
                        )
                    } else {
                        e.to_string()
                    },
                })?;
        // Granted Secret values never reach a log, error or status (README "Trust and
        // tenancy").
        finished.stdout = redact(&finished.stdout, &secrets);
        finished.stderr = redact(&finished.stderr, &secrets);
        res.logs.push(ContainerLog {
            name: c.name.clone(),
            stdout: finished.stdout.clone(),
            stderr: finished.stderr.clone(),
            exit_code: finished.exit_code,
        });
        let stderr_tail = runtime::tail_lines(&finished.stderr, 20);
        if finished.timed_out {
            return Err(Error::Timeout {
                pipeline: pname.into(),
                container: c.name.clone(),
                after: cfg.timeout,
                stderr_tail,
            });
        }
        if finished.exit_code != Some(0) {
            // bwrap could not exec the command (`bwrap: execvp ...: No such file or
            // directory`): say why when it is a script with CRLF line endings.
            let hint = if cfg.sandbox == SandboxMode::Bwrap
                && finished.exit_code == Some(1)
                && finished.stderr.lines().any(|l| {
                    (l.starts_with("bwrap: execvp")
                        || l.starts_with("promised sandbox: execvp")
                        || l.starts_with("promised adapter: execvp"))
                        && l.ends_with("No such file or directory")
                }) {
                crlf_shebang_hint(&command0, input.promise_dir.as_deref(), mounts)
            } else {
                String::new()
            };
            // The process runtime's root is read-only where an image's is writable: say how
            // to give the command a writable directory.
            let ro_hint = if process_runtime
                && cfg.sandbox == SandboxMode::Bwrap
                && finished.stderr.contains("Read-only file system")
            {
                "; to let the command write in a directory such as its working directory, list it in the image override's `scratch` (README \"Image overrides\")"
            } else {
                ""
            };
            return Err(Error::ContainerFailed {
                pipeline: pname.into(),
                container: c.name.clone(),
                exit_code: finished.exit_code,
                signal: finished.signal,
                stderr_tail,
                sandbox_note: hint + &sandbox_note + ro_hint,
            });
        }
    }

    finish_pipeline(cfg, input, &dirs, res)
}

/// Runs one container: in the resident sandbox ([`super::resident`]) when the runner has one
/// and can hand it the run (a bwrap or image-runtime command line it reads, no network), else
/// the invocation as it is (bwrap, `unshare` for an image, or the bare command).
async fn start(
    cfg: &RunnerConfig,
    inv: &runtime::Invocation,
    run_root: &std::path::Path,
    container: usize,
) -> std::io::Result<runtime::Finished> {
    if let (Some(exe), SandboxMode::Bwrap) = (&cfg.resident, cfg.sandbox)
        && let Some(req) = resident_request(inv, run_root, container)?
        && let Some(done) = resident::Resident::for_exe(exe)
            .run(req, inv.timeout, inv.log_cap)
            .await
    {
        return done;
    }
    runtime::run(inv).await
}

/// The resident sandbox's form of `inv`, or `None` when it has to run as it is.
fn resident_request(
    inv: &runtime::Invocation,
    run_root: &std::path::Path,
    container: usize,
) -> std::io::Result<Option<resident::RunRequest>> {
    use resident::request::{from_bwrap_args, from_image_args};
    let (root, mountpoint, parsed) = if inv.program == "unshare" {
        match from_image_args(&inv.args) {
            Some((lower, scratch, p)) => (resident::Root::Overlay { lower }, scratch, p),
            None => return Ok(None),
        }
    } else {
        match from_bwrap_args(&inv.args) {
            Some(p) => (
                resident::Root::Tmpfs,
                resident::mountpoint(run_root, container)?,
                p,
            ),
            None => return Ok(None),
        }
    };
    Ok(Some(resident::RunRequest {
        mountpoint,
        root,
        ops: parsed.ops,
        argv: parsed.argv,
        env: inv.env.clone(),
        chdir: parsed.chdir,
        uid: parsed.uid,
        gid: parsed.gid,
    }))
}

/// Secret values shorter than this are not redacted from logs: a one- to three-character
/// value (`1`, `yes`) would blank out unrelated text and hides nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// The `secretKeyRef` values of container `c` among its resolved `env`, labelled
/// `<secret>/<key>`, for [`redact`].
fn secret_values(c: &crate::model::Container, env: &[(String, String)]) -> Vec<(String, String)> {
    c.env
        .iter()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            let (_, v) = env.iter().rev().find(|(n, _)| *n == e.name)?;
            Some((format!("{}/{}", r.name, r.key), v.clone()))
        })
        .collect()
}

/// `text` with every occurrence of a secret value (as given, and without surrounding
/// whitespace: a file's trailing newline) replaced by `[redacted: secret <secret>/<key>]`.
/// Values shorter than [`MIN_REDACTED_LEN`] are left.
pub fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (label, value) in secrets {
        for v in [value.as_str(), value.trim()] {
            if v.len() >= MIN_REDACTED_LEN && out.contains(v) {
                out = out.replace(v, &format!("[redacted: secret {label}]"));
            }
        }
    }
    out
}

/// What Kratix's `work-writer` and `status-writer` do after a Pipeline's containers, on the
/// contract directories `dirs` (kratix-contract.md §2.8, §2.6, §2.7): reads
/// `workflow-control.yaml` (suspend, retryAfter), collects `/kratix/output` with the size cap
/// and parses `destination-selectors.yaml` (configure workflows that are not paused), parses
/// `status.yaml`. Shared by the process and the Kubernetes Job runtime, so both check output
/// alike.
///
/// Errors: [`Error::UnsafeOutput`], [`Error::OutputTooLarge`], [`Error::InvalidSelectors`],
/// [`Error::InvalidStatus`], [`Error::InvalidWorkflowControl`], [`Error::Io`].
pub(super) fn finish_pipeline(
    cfg: &RunnerConfig,
    input: &WorkflowInput<'_>,
    dirs: &contract::PipelineDirs,
    res: &mut PipelineResult,
) -> Result<(), Error> {
    let meta = dirs.metadata();
    let read_meta = |name: &str| -> Result<String, Error> {
        let path = meta.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(_) => Ok(String::new()),
            Ok(m) if !m.is_file() => Err(Error::UnsafeOutput {
                path: format!("/kratix/metadata/{name}"),
                reason: "must be a regular file".into(),
            }),
            Ok(_) => std::fs::read_to_string(&path).map_err(|e| Error::Io {
                context: format!("reading /kratix/metadata/{name}"),
                message: e.to_string(),
            }),
        }
    };
    let control = metadata::parse_workflow_control(&read_meta("workflow-control.yaml")?)?;
    let paused = if let Some(after) = control.retry_after {
        Some(Outcome::Retry {
            after,
            message: control.message.clone(),
        })
    } else if control.suspend {
        Some(Outcome::Suspended {
            message: control.message.clone(),
        })
    } else {
        None
    };
    if paused.is_none() && input.action == Action::Configure {
        let out = dirs.output();
        res.outputs = output::collect(&out, cfg.output_cap_bytes)?;
        res.selectors = metadata::parse_destination_selectors(
            &read_meta("destination-selectors.yaml")?,
            &output::top_level_dirs(&out),
        )?;
    }
    res.status = metadata::parse_status(&read_meta("status.yaml")?)?;
    if let Some(o) = paused {
        res.outcome = o;
    }
    Ok(())
}
/// The file on the host that a container's command runs: `/promise/...` in the Promise's
/// folder, a path under an image override's mount in the mount's `host`, another absolute
/// path as is, a bare name looked up in the sandbox's `PATH`.
fn host_command_path(
    command: &str,
    promise_dir: Option<&std::path::Path>,
    mounts: &[Mount],
) -> Option<PathBuf> {
    if let (Some(rest), Some(pd)) = (command.strip_prefix("/promise/"), promise_dir) {
        return Some(pd.join(rest));
    }
    for m in mounts.iter().rev() {
        if let Some(rest) = command
            .strip_prefix(m.target.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
        {
            return Some(m.host.join(rest));
        }
    }
    if command.starts_with('/') {
        return Some(PathBuf::from(command));
    }
    if command.contains('/') {
        return None;
    }
    sandbox::DEFAULT_PATH
        .split(':')
        .map(|d| std::path::Path::new(d).join(command))
        .find(|p| p.is_file())
}

/// `: <command>: the script's first line ends with a carriage return ...` when `command` is a
/// script whose shebang line ends with `\r` (CRLF line endings), which makes the kernel look
/// for an interpreter such as `/bin/sh\r` and fail with "No such file or directory".
/// Empty otherwise.
fn crlf_shebang_hint(
    command: &str,
    promise_dir: Option<&std::path::Path>,
    mounts: &[Mount],
) -> String {
    use std::io::Read;
    let Some(path) = host_command_path(command, promise_dir, mounts) else {
        return String::new();
    };
    let mut head = Vec::with_capacity(256);
    let Ok(f) = std::fs::File::open(&path) else {
        return String::new();
    };
    if f.take(256).read_to_end(&mut head).is_err() {
        return String::new();
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return String::new();
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    if !line.ends_with(b"\r") {
        return String::new();
    }
    // The kernel takes the interpreter up to the first blank: only when that word ends with
    // the `\r` does exec fail with "No such file or directory".
    let interpreter = String::from_utf8_lossy(line)
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .unwrap_or_default()
        .to_string();
    if !interpreter.ends_with('\r') {
        return String::new();
    }
    format!(
        ": {command}: the script's first line ends with a carriage return (CRLF line endings): its interpreter {interpreter:?} does not exist; convert the file to LF line endings"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint reads the command's file on the host (Promise folder, image-override mount)
    /// and appears only for a shebang line ending in `\r`.
    #[test]
    fn crlf_shebang_hint_reads_the_host_file() {
        let tmp = tempfile::tempdir().unwrap();
        let pd = tmp.path().join("promise");
        let img = tmp.path().join("image");
        std::fs::create_dir_all(pd.join("pipeline")).unwrap();
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(pd.join("pipeline/crlf"), "#!/bin/sh\r\necho\r\n").unwrap();
        // `/bin/sh` exists and gets the argument "-eu\r": another error, no hint.
        std::fs::write(pd.join("pipeline/args"), "#!/bin/sh -eu\r\n").unwrap();
        std::fs::write(pd.join("pipeline/lf"), "#!/bin/sh\necho\r\n").unwrap();
        std::fs::write(pd.join("pipeline/binary"), "\x7fELF\r\n").unwrap();
        std::fs::write(img.join("run"), "#! /usr/bin/bash\r\n").unwrap();
        let mounts = [Mount {
            host: img.clone(),
            target: "/image".into(),
            writable: false,
        }];
        assert_eq!(
            crlf_shebang_hint("/promise/pipeline/crlf", Some(&pd), &[]),
            ": /promise/pipeline/crlf: the script's first line ends with a carriage return (CRLF line endings): its interpreter \"/bin/sh\\r\" does not exist; convert the file to LF line endings"
        );
        assert_eq!(
            crlf_shebang_hint("/image/run", None, &mounts),
            ": /image/run: the script's first line ends with a carriage return (CRLF line endings): its interpreter \"/usr/bin/bash\\r\" does not exist; convert the file to LF line endings"
        );
        for quiet in [
            "/promise/pipeline/lf",
            "/promise/pipeline/args",
            "/promise/pipeline/binary",
            "/promise/nope",
        ] {
            assert_eq!(crlf_shebang_hint(quiet, Some(&pd), &mounts), "", "{quiet}");
        }
        assert_eq!(crlf_shebang_hint("/imagex/run", None, &mounts), "");
    }
}
