//! Choosing the manifest of an image index (manifest list) for this host: `linux` and the
//! host's architecture in Go's names (`amd64`, `arm64`, …), the variant considered.

/// A platform as an index entry names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// Go architecture name: `amd64`, `arm64`, `arm`, `386`, …
    pub architecture: String,
    /// `v8`, `v7`, … when given.
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The host's architecture in Go's names (what image indexes use).
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips64" => "mips64",
        other => other,
    }
}

/// The variants acceptable for `architecture` on this host, best first; `None` stands for an
/// entry without a variant.
fn acceptable_variants(architecture: &str) -> &'static [Option<&'static str>] {
    match architecture {
        // Only the baseline: a v2/v3 image may use instructions this host lacks.
        "amd64" => &[None, Some("v1")],
        "arm64" => &[Some("v8"), None],
        "arm" => &[Some("v7"), None, Some("v6"), Some("v5")],
        _ => &[None],
    }
}

/// The host platform as a string for messages: `linux/amd64`.
pub(crate) fn host_description() -> String {
    format!("linux/{}", host_architecture())
}

/// The index of the entry of `entries` to use on this host: linux, the host's architecture,
/// the best acceptable variant; among equals the first.
pub(crate) fn choose(entries: &[Option<Platform>]) -> Option<usize> {
    choose_for(entries, host_architecture())
}

fn choose_for(entries: &[Option<Platform>], architecture: &str) -> Option<usize> {
    let variants = acceptable_variants(architecture);
    let rank = |p: &Platform| -> Option<usize> {
        if p.os != "linux" || p.architecture != architecture {
            return None;
        }
        variants.iter().position(|v| *v == p.variant.as_deref())
    };
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((rank(p.as_ref()?)?, i)))
        .min()
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Option<Platform> {
        Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        })
    }

    #[test]
    fn picks_linux_and_arch_and_variant() {
        let entries = vec![
            p("windows", "amd64", None),
            p("linux", "arm", Some("v6")),
            p("linux", "arm64", None),
            p("linux", "arm64", Some("v8")),
            p("linux", "amd64", Some("v3")),
            p("linux", "amd64", None),
            p("linux", "arm", Some("v7")),
            None,
        ];
        assert_eq!(choose_for(&entries, "amd64"), Some(5));
        assert_eq!(choose_for(&entries, "arm64"), Some(3));
        assert_eq!(choose_for(&entries, "arm"), Some(6));
        assert_eq!(choose_for(&entries, "s390x"), None);
        assert_eq!(choose_for(&entries[..5], "amd64"), None);
    }
}
