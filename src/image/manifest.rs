//! Reading manifests and configs: the accepted media types, [`parse_manifest`] (image
//! manifest or index), the index entry for this host ([`choose_entry`]) and the runtime part
//! of an image config ([`image_config`]).

use serde::Deserialize;

use super::error::ImageError;
use super::{ImageConfig, cache, platform};

/// Largest manifest or config blob read into memory (bytes).
pub(super) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// A manifest's essentials: either an image or an index.
pub(super) enum Manifest {
    Image {
        config: Blob,
        layers: Vec<Blob>,
    },
    Index {
        entries: Vec<(String, Option<platform::Platform>)>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(super) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const IMAGE_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub(super) fn parse_manifest(
    image: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<Manifest, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let bad = |e: &dyn std::fmt::Display| {
        ImageError::invalid(image, format!("manifest {digest} is not valid: {e}"))
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
    if probe.schema_version != Some(2) {
        return Err(ImageError::UnsupportedMediaType {
            image: image.to_string(),
            what: "manifest".to_string(),
            digest: digest.to_string(),
            media_type: format!(
                "{} (schemaVersion {:?}; only schema 2 is supported)",
                probe.media_type.as_deref().unwrap_or("none"),
                probe.schema_version
            ),
        });
    }
    let is_index = match probe.media_type.as_deref() {
        Some(t) if INDEX_TYPES.contains(&t) => true,
        Some(t) if IMAGE_TYPES.contains(&t) => false,
        None => probe.manifests.is_some(),
        Some(t) => {
            return Err(ImageError::UnsupportedMediaType {
                image: image.to_string(),
                what: "manifest".to_string(),
                digest: digest.to_string(),
                media_type: t.to_string(),
            });
        }
    };
    if is_index {
        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
        let entries = index
            .manifests()
            .iter()
            .map(|d| {
                let platform = d.platform().as_ref().map(|p| platform::Platform {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone(),
                });
                (d.digest().to_string(), platform)
            })
            .collect();
        return Ok(Manifest::Index { entries });
    }
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(bytes).map_err(|e| bad(&e))?;
    let blob = |d: &oci_spec::image::Descriptor| Blob {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size(),
    };
    Ok(Manifest::Image {
        config: blob(m.config()),
        layers: m.layers().iter().map(blob).collect(),
    })
}

pub(super) fn image_config(config: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c
            .env()
            .iter()
            .flatten()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect(),
        working_dir: nonempty(c.working_dir()),
        user: nonempty(c.user()),
    }
}

/// The index entry for this host, or [`ImageError::NoPlatform`] listing what there is.
pub(super) fn choose_entry(
    image: &str,
    index: &str,
    entries: &[(String, Option<platform::Platform>)],
) -> Result<String, ImageError> {
    let platforms: Vec<Option<platform::Platform>> =
        entries.iter().map(|(_, p)| p.clone()).collect();
    match platform::choose(&platforms) {
        Some(i) if cache::digest_hex(&entries[i].0).is_none() => Err(ImageError::invalid(
            image,
            format!(
                "index {index} names {:?} for this platform: only sha256 digests are supported",
                entries[i].0
            ),
        )),
        Some(i) => Ok(entries[i].0.clone()),
        None => Err(ImageError::NoPlatform {
            image: image.to_string(),
            index: index.to_string(),
            wanted: platform::host_description(),
            available: {
                let list: Vec<String> = platforms
                    .iter()
                    .map(|p| p.as_ref().map_or("unknown".to_string(), |p| p.to_string()))
                    .collect();
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(", ")
                }
            },
        }),
    }
}
