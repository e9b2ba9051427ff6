//! Image overrides ([`ImageOverride`]): how the process runtime runs a container image it does
//! not pull — a host command, mounts, the network, and what an image would otherwise give its
//! containers: a working directory (`workingDir`, the image's `WorkingDir`), environment
//! (`env`, the image's `Env`) and private writable directories (`scratch`, standing in for the
//! image's writable root file system where a script writes, such as its working directory).
//!
//! [`check_overrides`] refuses unusable paths and variable names when the daemon config (or
//! `--image-overrides`) is loaded; [`scratch_mounts`] creates one run's scratch directories.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Error, Mount};

/// How the process runtime runs one container image (YAML: `{command: [..], mounts:
/// [{host, target, writable}], network: bool, workingDir: /dir, env: {NAME: value},
/// scratch: [/dir]}`). Every field is optional. Fields left empty are not serialized, so the
/// input hash of workflows using an override without them is what it was before they existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageOverride {
    /// Host command standing in for the image entrypoint; used when the container has no
    /// `command`. Paths are as seen inside the sandbox (so a mounted script works).
    #[serde(default)]
    pub command: Vec<String>,
    /// Mounts the image's scripts expect (e.g. `/tmp/transfer`).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Allow network access for containers of this image.
    #[serde(default)]
    pub network: bool,
    /// The directory the command starts in when the container has no `workingDir` of its own
    /// (the image's `WorkingDir`); absolute. Default `/` (with `sandbox: none`: the run
    /// directory). It is not made writable: list it in [`scratch`](Self::scratch) for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment variables (the image's `Env`), set before the `KRATIX_*` variables and the
    /// container's own `env`, which win on duplicates; e.g. `PATH`. YAML: a map
    /// `{NAME: value}` or a list `[{name: NAME, value: value}]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "env_map_or_list"
    )]
    pub env: Vec<EnvEntry>,
    /// Absolute paths inside the sandbox, each given a fresh, empty, writable directory of its
    /// own for every container run (under the run's directory on the host, removed when the
    /// Pipeline finishes, never shared between runs). Not `/`, nor under `/kratix`, `/proc`
    /// or `/dev`. Needs the bwrap sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scratch: Vec<String>,
}

/// One environment variable of an [`ImageOverride`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvEntry {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `env` as a map `{NAME: value}` (in document order where the format keeps it) or a list of
/// `{name, value}`.
fn env_map_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EnvEntry>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<EnvEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of NAME: value or a list of {name, value}")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((name, value)) = m.next_entry::<String, String>()? {
                out.push(EnvEntry { name, value });
            }
            Ok(out)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut s: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(e) = s.next_element::<EnvEntry>()? {
                out.push(e);
            }
            Ok(out)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

impl ImageOverride {
    /// The override's environment as `(name, value)` pairs, in order.
    pub fn env_pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.env.iter().map(|e| (e.name.clone(), e.value.clone()))
    }

    /// Checks `workingDir`, `env` and `scratch` of the override for `image`; the message
    /// names the image, the field and the offending value.
    pub fn check(&self, image: &str) -> Result<(), String> {
        let at = |field: &str| format!("imageOverrides[{image:?}].{field}");
        if let Some(w) = &self.working_dir
            && !w.starts_with('/')
        {
            return Err(format!(
                "{}: {w:?} is not an absolute path",
                at("workingDir")
            ));
        }
        for e in &self.env {
            if e.name.is_empty() || e.name.contains(['=', '\0']) {
                return Err(format!(
                    "{}: {:?} is not a variable name (empty, or holds `=` or NUL)",
                    at("env"),
                    e.name
                ));
            }
            if e.value.contains('\0') {
                return Err(format!("{}: {:?}: the value holds NUL", at("env"), e.name));
            }
        }
        for (i, p) in self.scratch.iter().enumerate() {
            if let Some(why) = scratch_path_problem(p) {
                return Err(format!("{}: {p:?} {why}", at("scratch")));
            }
            if self.scratch[..i].contains(p) {
                return Err(format!("{}: {p:?} is listed twice", at("scratch")));
            }
        }
        Ok(())
    }
}

/// Why `p` cannot be a scratch path, or `None` when it can: absolute and normalized (no
/// `.`, `..`, empty components or trailing `/`), not `/`, not `/kratix`, `/proc`, `/dev` or
/// anything under them.
fn scratch_path_problem(p: &str) -> Option<&'static str> {
    let Some(rest) = p.strip_prefix('/') else {
        return Some("is not an absolute path");
    };
    if rest.is_empty() {
        return Some("is the root: only directories below it can be scratch");
    }
    if p.contains('\0')
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some(
            "is not a normalized path (no `.` or `..` components, no `//`, no trailing `/`)",
        );
    }
    let top = rest.split('/').next().unwrap_or_default();
    match top {
        "kratix" => Some("is under /kratix, where the contract directories are"),
        "proc" | "dev" => Some("is under /proc or /dev, which the sandbox provides"),
        _ => None,
    }
}

/// Checks every override ([`ImageOverride::check`]); the first problem, as a message naming
/// the image, the field and the value.
pub fn check_overrides(overrides: &BTreeMap<String, ImageOverride>) -> Result<(), String> {
    overrides.iter().try_for_each(|(image, o)| o.check(image))
}

/// Creates the scratch directories of `over` for one container run, each empty and fresh
/// under `run_dir` (the Pipeline's run directory, removed when it finishes), and returns them
/// as writable mounts at their scratch paths. `container` (the container's index) keeps the
/// directories of two containers of one Pipeline apart, as their root file systems would be.
pub fn scratch_mounts(
    over: &ImageOverride,
    run_dir: &Path,
    container: usize,
) -> Result<Vec<Mount>, Error> {
    let mut out = Vec::with_capacity(over.scratch.len());
    for (i, target) in over.scratch.iter().enumerate() {
        let host = run_dir.join(format!("scratch-{container}-{i}"));
        std::fs::create_dir(&host).map_err(|e| Error::Io {
            context: format!("creating the scratch directory for {target}"),
            message: e.to_string(),
        })?;
        out.push(Mount {
            host,
            target: target.clone(),
            writable: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ImageOverride, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn env_is_a_map_or_a_list_and_new_fields_are_optional() {
        let o = parse("command: [run]\n").unwrap();
        assert_eq!(o.working_dir, None);
        assert!(o.env.is_empty() && o.scratch.is_empty());
        let o =
            parse("workingDir: /work\nenv:\n  PATH: /opt/bin:/usr/bin\n  A: b\nscratch: [/work]\n")
                .unwrap();
        assert_eq!(o.working_dir.as_deref(), Some("/work"));
        assert_eq!(
            o.env_pairs().collect::<Vec<_>>(),
            [
                ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
                ("A".to_string(), "b".to_string())
            ]
        );
        assert_eq!(o.scratch, ["/work"]);
        let l =
            parse("env:\n  - {name: PATH, value: /opt/bin:/usr/bin}\n  - {name: A, value: b}\n")
                .unwrap();
        assert_eq!(l.env, o.env);
        assert!(
            parse("env: {A: b}\nwhatever: 1\n").is_err(),
            "unknown fields are refused"
        );
        assert!(parse("env: [{name: A, valu: b}]\n").is_err());
    }

    /// The input hash covers an override through its serialized form: the new fields are in
    /// it when set, and absent (the form unchanged) when not.
    #[test]
    fn serialized_form_covers_new_fields_and_is_unchanged_without_them() {
        let plain = ImageOverride {
            command: vec!["run".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"command":["run"],"mounts":[],"network":false}"#
        );
        let full = ImageOverride {
            working_dir: Some("/work".into()),
            env: vec![EnvEntry {
                name: "A".into(),
                value: "b".into(),
            }],
            scratch: vec!["/work".into()],
            ..plain.clone()
        };
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(
            text,
            r#"{"command":["run"],"mounts":[],"network":false,"workingDir":"/work","env":[{"name":"A","value":"b"}],"scratch":["/work"]}"#
        );
        assert_eq!(serde_json::from_str::<ImageOverride>(&text).unwrap(), full);
    }

    #[test]
    fn bad_paths_and_names_are_refused_naming_them() {
        let with = |yaml: &str| {
            let o = parse(yaml).unwrap();
            check_overrides(&BTreeMap::from([("img:v1".to_string(), o)]))
        };
        assert!(
            with("workingDir: /work\nscratch: [/work, /var/cache/x, /tmp/s, /kratixx]\n").is_ok()
        );
        for (yaml, want) in [
            (
                "scratch: [work]",
                r#"imageOverrides["img:v1"].scratch: "work" is not an absolute path"#,
            ),
            ("scratch: [/]", r#""/" is the root"#),
            (
                "scratch: [/a/../b]",
                r#""/a/../b" is not a normalized path"#,
            ),
            ("scratch: [/a/]", r#""/a/" is not a normalized path"#),
            ("scratch: [/a//b]", r#""/a//b" is not a normalized path"#),
            ("scratch: [/a/./b]", r#""/a/./b" is not a normalized path"#),
            ("scratch: [/kratix]", r#""/kratix" is under /kratix"#),
            (
                "scratch: [/kratix/output]",
                r#""/kratix/output" is under /kratix"#,
            ),
            ("scratch: [/proc/x]", r#""/proc/x" is under /proc or /dev"#),
            ("scratch: [/dev]", r#""/dev" is under /proc or /dev"#),
            ("scratch: [/w, /w]", r#""/w" is listed twice"#),
            (
                "workingDir: work",
                r#"imageOverrides["img:v1"].workingDir: "work" is not an absolute path"#,
            ),
            (
                "env: {\"A=B\": x}",
                r#"imageOverrides["img:v1"].env: "A=B" is not a variable name"#,
            ),
            (
                "env: [{name: \"\", value: x}]",
                r#"env: "" is not a variable name"#,
            ),
        ] {
            let e = with(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn scratch_directories_are_fresh_per_container() {
        let tmp = tempfile::tempdir().unwrap();
        let o = ImageOverride {
            scratch: vec!["/work".into(), "/var/cache/x".into()],
            ..Default::default()
        };
        let m = scratch_mounts(&o, tmp.path(), 0).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.writable && m.host.is_dir()));
        assert_eq!(m[0].target, "/work");
        assert_eq!(m[1].target, "/var/cache/x");
        let n = scratch_mounts(&o, tmp.path(), 1).unwrap();
        assert_ne!(m[0].host, n[0].host);
        // The same container twice would mean sharing: refused.
        assert!(scratch_mounts(&o, tmp.path(), 0).is_err());
    }
}
