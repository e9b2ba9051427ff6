//! How a Job's output comes back: the output container (`promised adapter emit-output`) writes
//! a gzip-compressed tar of `/kratix/output` and the metadata files to its stdout, base64 in
//! lines of 76 characters between two marker lines; the daemon reads that container's log and
//! unpacks it into fresh contract directories ([`unpack`]). The reader init container
//! (`promised adapter read-input`) copies `object.yaml` from the input Secret's mount
//! ([`read_input`]).
//!
//! The log is one of:
//! ```text
//! promised-output-v1 begin
//! H4sIAAAAAAAA/+3...          (base64 of the gzip of the tar, 76 characters a line)
//! promised-output-v1 end
//! ```
//! or, when the emitter refuses the output with the host runtime's own checks
//! ([`super::super::output::collect`]: size cap, symlinks, special files, unsafe names):
//! `promised-output-v1 refused {"tooLarge":{"bytes":N,"cap":M}}` or
//! `promised-output-v1 refused {"unsafe":{"path":"…","reason":"…"}}`.
//!
//! The archive holds `output/…` (every file the host runtime would collect, and the top-level
//! directories, which destination selectors check) and `metadata/<name>` for
//! `workflow-control.yaml`, `destination-selectors.yaml` and `status.yaml`. Output is left
//! out when the Pipeline is paused by `workflow-control.yaml` or runs a delete workflow
//! (`--skip-output`), where the host runtime does not collect it either.

use std::io::{self, Read, Write};
use std::path::{Component, Path};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::super::{Error, metadata, output};

/// The first line of an emitted archive.
pub const BEGIN: &str = "promised-output-v1 begin";
/// The last line of an emitted archive.
pub const END: &str = "promised-output-v1 end";
/// The prefix of the line that refuses the output, followed by a [`Refusal`] as JSON.
pub const REFUSED: &str = "promised-output-v1 refused ";
/// The metadata files the daemon reads (kratix-contract.md §2.5–§2.7); others stay in the pod.
pub const METADATA_FILES: [&str; 3] = [
    "workflow-control.yaml",
    "destination-selectors.yaml",
    "status.yaml",
];
const LINE: usize = 76;

/// Why the emitter refused a Pipeline's output: the same answers as the host runtime's
/// [`output::collect`] and metadata checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// [`Error::OutputTooLarge`].
    TooLarge {
        /// Bytes seen.
        bytes: u64,
        /// The cap.
        cap: u64,
    },
    /// [`Error::UnsafeOutput`].
    Unsafe {
        /// The path (relative to `/kratix/output`, or `/kratix/metadata/<name>`).
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::TooLarge { bytes, cap } => Error::OutputTooLarge { bytes, cap },
            Refusal::Unsafe { path, reason } => Error::UnsafeOutput { path, reason },
        }
    }
}

/// `promised adapter read-input`: copies the input object from `from` (the input Secret's
/// mount) to `to` (`/kratix/input/object.yaml` in the shared emptyDir), as a regular file.
///
/// Errors: `from` unreadable or `to` not writable (the message names the path).
pub fn read_input(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    std::fs::write(to, bytes).map_err(|e| format!("writing {}: {e}", to.display()))
}

/// `promised adapter emit-output`: writes the archive of `output_dir` and the metadata files of
/// `metadata_dir` to `out` (module docs), or one refusal line. `cap` is the output size cap in
/// bytes (the daemon's `maxOutputBytes`); `skip_output` leaves `/kratix/output` out (delete
/// workflows).
///
/// Errors: I/O errors reading the directories or writing `out` (a refusal is not an error).
pub fn emit_output(
    output_dir: &Path,
    metadata_dir: &Path,
    cap: u64,
    skip_output: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    match collect(output_dir, metadata_dir, cap, skip_output)? {
        Err(refusal) => {
            let json = serde_json::to_string(&refusal).map_err(io::Error::other)?;
            writeln!(out, "{REFUSED}{json}")?;
        }
        Ok((files, dirs, meta)) => {
            writeln!(out, "{BEGIN}")?;
            let mut wrap = LineWrap { inner: out, col: 0 };
            {
                let b64 = base64::write::EncoderWriter::new(
                    &mut wrap,
                    &base64::engine::general_purpose::STANDARD,
                );
                let gz = flate2::write::GzEncoder::new(b64, flate2::Compression::default());
                let mut tar = tar::Builder::new(gz);
                for d in dirs {
                    append(&mut tar, &format!("output/{d}/"), None)?;
                }
                for f in &files {
                    append(&mut tar, &format!("output/{}", f.path), Some(&f.bytes))?;
                }
                for (name, bytes) in &meta {
                    append(&mut tar, &format!("metadata/{name}"), Some(bytes))?;
                }
                tar.into_inner()?.finish()?.finish()?;
            }
            if wrap.col != 0 {
                wrap.inner.write_all(b"\n")?;
            }
            writeln!(out, "{END}")?;
        }
    }
    out.flush()
}

type Collected = (Vec<output::OutputFile>, Vec<String>, Vec<(String, Vec<u8>)>);

/// The files to emit, or why not, with the host runtime's checks.
fn collect(
    output_dir: &Path,
    metadata_dir: &Path,
    cap: u64,
    skip_output: bool,
) -> io::Result<Result<Collected, Refusal>> {
    let mut meta = Vec::new();
    let mut meta_bytes = 0u64;
    for name in METADATA_FILES {
        let path = metadata_dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
            Ok(m) if !m.is_file() => {
                return Ok(Err(Refusal::Unsafe {
                    path: format!("/kratix/metadata/{name}"),
                    reason: "must be a regular file".into(),
                }));
            }
            Ok(m) => {
                meta_bytes += m.len();
                if meta_bytes > cap {
                    return Ok(Err(Refusal::TooLarge {
                        bytes: meta_bytes,
                        cap,
                    }));
                }
                meta.push((name.to_string(), std::fs::read(&path)?));
            }
        }
    }
    // The host runtime collects output only when the Pipeline is not paused (and a
    // workflow-control.yaml it cannot read fails the Pipeline before output is looked at).
    let paused = match meta.iter().find(|(n, _)| n == "workflow-control.yaml") {
        None => false,
        Some((_, bytes)) => match metadata::parse_workflow_control(&String::from_utf8_lossy(bytes))
        {
            Ok(c) => c.retry_after.is_some() || c.suspend,
            Err(_) => true,
        },
    };
    if skip_output || paused {
        return Ok(Ok((Vec::new(), Vec::new(), meta)));
    }
    match output::collect(output_dir, cap) {
        Ok(files) => {
            let dirs = output::top_level_dirs(output_dir).into_iter().collect();
            Ok(Ok((files, dirs, meta)))
        }
        Err(Error::OutputTooLarge { bytes, cap }) => Ok(Err(Refusal::TooLarge { bytes, cap })),
        Err(Error::UnsafeOutput { path, reason }) => Ok(Err(Refusal::Unsafe { path, reason })),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: Option<&[u8]>) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    match data {
        Some(bytes) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            tar.append_data(&mut h, path, bytes)
        }
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, path, io::empty())
        }
    }
}

/// Inserts a newline after every [`LINE`] bytes.
struct LineWrap<'a> {
    inner: &'a mut dyn Write,
    col: usize,
}

impl Write for LineWrap<'_> {
    /// Takes all of `buf` (base64's encoder answers `Ok(0)` to a short write, which
    /// `write_all` callers take for an error).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = rest.len().min(LINE - self.col);
            self.inner.write_all(&rest[..n])?;
            self.col += n;
            rest = &rest[n..];
            if self.col == LINE {
                self.inner.write_all(b"\n")?;
                self.col = 0;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unpacks the output container's `log` (module docs) into `root`, which holds the empty
/// `output` and `metadata` directories of a [`super::super::contract::PipelineDirs`]. Only
/// directories and regular files under `output/` and `metadata/` are accepted, with relative
/// paths without `..`; nothing is ever created as a link, so nothing can point outside
/// `root`. At most `limit` bytes of file contents are written.
///
/// Errors: [`Error::OutputTooLarge`] and [`Error::UnsafeOutput`] for a refusal line or an
/// archive over `limit`, and for a log cut short at `log_limit` bytes (`limitBytes`);
/// [`Error::JobOutput`] (naming `pipeline` and `job`) for a log without the markers or with a
/// broken archive; [`Error::Io`] when `root` is not writable.
pub fn unpack(
    log: &str,
    root: &Path,
    cap: u64,
    log_limit: u64,
    pipeline: &str,
    job: &str,
) -> Result<(), Error> {
    let bad = |reason: String| Error::JobOutput {
        pipeline: pipeline.into(),
        job: job.into(),
        reason,
    };
    let mut lines = log.lines().map(|l| l.trim_end_matches('\r'));
    let mut body = String::new();
    loop {
        match lines.next() {
            None => {
                return Err(bad(format!(
                    "the output container's log has no {BEGIN:?} line"
                )));
            }
            Some(l) if l == BEGIN => break,
            Some(l) => {
                if let Some(json) = l.strip_prefix(REFUSED) {
                    let r: Refusal = serde_json::from_str(json)
                        .map_err(|e| bad(format!("unreadable refusal {json:?}: {e}")))?;
                    return Err(r.into());
                }
            }
        }
    }
    let mut ended = false;
    for l in lines.by_ref() {
        if l == END {
            ended = true;
            break;
        }
        body.push_str(l.trim());
    }
    if !ended {
        if log.len() as u64 >= log_limit {
            return Err(Error::OutputTooLarge {
                bytes: log.len() as u64,
                cap,
            });
        }
        return Err(bad(format!(
            "the output container's log ends before the {END:?} line"
        )));
    }
    let gz = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| bad(format!("bad base64: {e}")))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("bad archive: {e}")))?;
    // Output may use the whole cap, and the metadata files as much again.
    let limit = cap.saturating_mul(2);
    let mut written = 0u64;
    let io = |context: String| {
        move |e: io::Error| Error::Io {
            context,
            message: e.to_string(),
        }
    };
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("bad archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad archive entry name: {e}")))?
            .into_owned();
        let shown = path.to_string_lossy().into_owned();
        let mut parts = path.components();
        let top = match parts.next() {
            Some(Component::Normal(t)) if t == "output" || t == "metadata" => t.to_owned(),
            _ => {
                return Err(bad(format!(
                    "archive entry {shown:?} is not under output/ or metadata/"
                )));
            }
        };
        if !parts.clone().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Error::UnsafeOutput {
                path: shown,
                reason: "absolute paths and `..` are not allowed".into(),
            });
        }
        let rel: std::path::PathBuf = parts.collect();
        let in_output = top == "output";
        let user_path = if in_output {
            rel.to_string_lossy().into_owned()
        } else {
            format!("/kratix/metadata/{}", rel.to_string_lossy())
        };
        let dest = root.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dest).map_err(io(format!("creating {shown}")))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    return Err(bad(format!("archive entry {shown:?} has no file name")));
                }
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(io(format!("creating {shown}")))?;
                }
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(limit.saturating_sub(written).saturating_add(1))
                    .read_to_end(&mut bytes)
                    .map_err(|e| bad(format!("bad archive: {e}")))?;
                written += bytes.len() as u64;
                if written > limit {
                    return Err(Error::OutputTooLarge {
                        bytes: written,
                        cap,
                    });
                }
                std::fs::write(&dest, bytes).map_err(io(format!("writing {shown}")))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(Error::UnsafeOutput {
                    path: user_path,
                    reason: if in_output {
                        "symbolic links are not allowed in /kratix/output".into()
                    } else {
                        "must be a regular file".into()
                    },
                });
            }
            _ => {
                return Err(Error::UnsafeOutput {
                    path: user_path,
                    reason: "only regular files are allowed (found a device, FIFO or socket)"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(dir: &Path, cap: u64, skip: bool) -> String {
        let mut out = Vec::new();
        emit_output(&dir.join("o"), &dir.join("m"), cap, skip, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn dirs(tmp: &Path) {
        std::fs::create_dir_all(tmp.join("o/dev/sub")).unwrap();
        std::fs::create_dir_all(tmp.join("o/empty")).unwrap();
        std::fs::create_dir_all(tmp.join("m")).unwrap();
    }

    /// What the emitter writes, the decoder unpacks: files, top-level directories (also
    /// empty ones) and the three metadata files, nothing else.
    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        dirs(tmp.path());
        std::fs::write(tmp.path().join("o/dev/sub/a.yaml"), "a: 1\n").unwrap();
        std::fs::write(tmp.path().join("o/.hidden"), vec![7u8; 10_000]).unwrap();
        std::fs::write(tmp.path().join("m/status.yaml"), "x: y\n").unwrap();
        std::fs::write(tmp.path().join("m/scratch"), "ignored").unwrap();
        let log = emit(tmp.path(), 1 << 20, false);
        assert!(
            log.lines()
                .all(|l| l.len() <= LINE || l.starts_with("promised"))
        );
        let into = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(into.path().join("output")).unwrap();
        std::fs::create_dir_all(into.path().join("metadata")).unwrap();
        unpack(&log, into.path(), 1 << 20, 1 << 30, "p", "j").unwrap();
        let got = output::collect(&into.path().join("output"), 1 << 20).unwrap();
        let want = output::collect(&tmp.path().join("o"), 1 << 20).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            output::top_level_dirs(&into.path().join("output")),
            output::top_level_dirs(&tmp.path().join("o"))
        );
        assert_eq!(
            std::fs::read_to_string(into.path().join("metadata/status.yaml")).unwrap(),
            "x: y\n"
        );
        assert!(!into.path().join("metadata/scratch").exists());

        // Delete workflows: metadata only.
        let log = emit(tmp.path(), 1 << 20, true);
        let into = tempfile::tempdir().unwrap();
        unpack(&log, into.path(), 1 << 20, 1 << 30, "p", "j").unwrap();
        assert!(!into.path().join("output").exists());
        assert!(into.path().join("metadata/status.yaml").is_file());
    }

    /// The emitter refuses what the host runtime refuses, and the decoder turns the refusal
    /// into the host runtime's error; a log cut at `limitBytes` is an oversized output.
    #[test]
    fn refusals_and_truncation() {
        let tmp = tempfile::tempdir().unwrap();
        dirs(tmp.path());
        std::fs::write(tmp.path().join("o/big"), vec![1u8; 100]).unwrap();
        let log = emit(tmp.path(), 10, false);
        assert!(log.starts_with(REFUSED), "{log}");
        let into = tempfile::tempdir().unwrap();
        assert_eq!(
            unpack(&log, into.path(), 10, 1 << 30, "p", "j").unwrap_err(),
            Error::OutputTooLarge {
                bytes: 100,
                cap: 10
            }
        );
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("o/link")).unwrap();
        let log = emit(tmp.path(), 1000, false);
        match unpack(&log, into.path(), 1000, 1 << 30, "p", "j").unwrap_err() {
            Error::UnsafeOutput { path, reason } => {
                assert_eq!(path, "link");
                assert!(reason.contains("symbolic"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Paused by workflow-control.yaml: output is not looked at.
        std::fs::write(
            tmp.path().join("m/workflow-control.yaml"),
            "suspend: true\n",
        )
        .unwrap();
        let log = emit(tmp.path(), 1000, false);
        assert!(log.starts_with(BEGIN), "{log}");

        let cut = &log[..log.len() - END.len() - 5];
        assert!(matches!(
            unpack(cut, into.path(), 1000, cut.len() as u64, "p", "j"),
            Err(Error::OutputTooLarge { .. })
        ));
        match unpack("hello\n", into.path(), 1000, 1 << 30, "pl", "jb").unwrap_err() {
            Error::JobOutput { pipeline, job, .. } => {
                assert_eq!((pipeline, job), ("pl".into(), "jb".into()))
            }
            other => panic!("{other:?}"),
        }
    }

    /// A hand-made archive with a link or a path outside the directories is refused.
    #[test]
    fn unsafe_archives_are_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, "output/x", "/etc/passwd").unwrap();
        let mut other = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        other.append_data(&mut h, "elsewhere/x", &b"x"[..]).unwrap();
        for (archive, want) in [
            (tar.into_inner().unwrap(), "symbolic"),
            (other.into_inner().unwrap(), "not under output/"),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&archive).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
            let log = format!("{BEGIN}\n{b64}\n{END}\n");
            let into = tempfile::tempdir().unwrap();
            let e = unpack(&log, into.path(), 1000, 1 << 30, "p", "j").unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(!into.path().join("output/x").exists());
        }
    }
}
