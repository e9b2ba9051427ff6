//! The `layer_tar` target: image layers built from generated tar entries (paths with `..`,
//! absolute paths, long GNU names, pax `path`/`linkpath` overrides, symlinks and hard links
//! pointing out of the root, whiteouts, devices, FIFOs), compressed with nothing, gzip or
//! zstd, sometimes with a wrong diff_id or a small size cap, then mutated byte by byte.
//! Property: `apply_layers` answers (bytes written or an error), and nothing beside the root
//! changes: the directory holding it still has exactly `root/`, `outside.txt` (unchanged) and
//! an empty `victim/`.

use std::io::Write;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sha2::Digest;

use crate::harness::fuzz;
use crate::inputs::{Edit, edits, mutate};

const COMPONENTS: &[&str] = &[
    "a",
    "b",
    "c",
    "..",
    ".",
    "",
    "etc",
    "lnk",
    "hard",
    ".wh.a",
    ".wh..wh..opq",
    ".wh.lnk",
    ".wh...",
    "victim",
    "outside.txt",
    "dev",
    "é",
];
const TARGETS: &[&str] = &[
    "a",
    "b",
    "..",
    "../..",
    "/",
    "/etc",
    "../outside.txt",
    "../../outside.txt",
    "../victim",
    "a/b",
    "lnk",
    "lnk/x",
    "/../../victim",
    "hard",
    "",
    ".",
];

/// A tar entry: (path, kind, data or link target, pax override).
#[derive(Debug, Clone)]
pub struct Entry {
    path: String,
    kind: u8,
    data: Vec<u8>,
    pax: Option<(&'static str, String)>,
}

fn path() -> impl Strategy<Value = String> {
    (
        vec(select(COMPONENTS), 1..5),
        any::<bool>(),
        any::<bool>(),
        0usize..4,
    )
        .prop_map(|(parts, abs, trailing, long)| {
            let mut p = parts.join("/");
            if long == 0 {
                p = format!("{}/{p}", "l".repeat(150));
            }
            if abs {
                p.insert(0, '/');
            }
            if trailing {
                p.push('/');
            }
            p
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    let target = prop_oneof![select(TARGETS).prop_map(str::to_string), path()];
    (
        path(),
        0u8..8,
        prop_oneof![
            vec(any::<u8>(), 0..64),
            target.clone().prop_map(String::into_bytes)
        ],
        proptest::option::of((select(&["path", "linkpath", "size"][..]), target)),
    )
        .prop_map(|(path, kind, data, pax)| Entry {
            path,
            kind,
            data,
            pax,
        })
}

/// Appends a header with `name` written raw (no path checks), with a GNU long-name entry
/// before it when the name does not fit.
fn append_raw(
    b: &mut tar::Builder<Vec<u8>>,
    mut h: tar::Header,
    name: &[u8],
    link: &[u8],
    data: &[u8],
) {
    let long = |b: &mut tar::Builder<Vec<u8>>, ty: tar::EntryType, value: &[u8]| {
        let mut l = tar::Header::new_gnu();
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        l.set_entry_type(ty);
        l.set_size(value.len() as u64 + 1);
        l.set_mode(0o644);
        l.set_cksum();
        let _ = b.append(&l, [value, b"\0"].concat().as_slice());
    };
    if name.len() > 99 {
        long(b, tar::EntryType::GNULongName, name);
    }
    if link.len() > 99 {
        long(b, tar::EntryType::GNULongLink, link);
    }
    let n = name.len().min(99);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(99);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_cksum();
    let _ = b.append(&h, data);
}

fn build_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if let Some((key, value)) = &e.pax {
            let record = |k: &str, v: &str| {
                let body = format!(" {k}={v}\n");
                let mut len = body.len() + 1;
                while format!("{len}{body}").len() != len {
                    len += 1;
                }
                format!("{len}{body}")
            };
            let data = record(key, value);
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            append_raw(&mut b, h, b"pax", b"", data.as_bytes());
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(if e.kind % 2 == 0 { 0o6755 } else { 0o555 });
        h.set_mtime(0);
        let (ty, link, data): (_, &[u8], &[u8]) = match e.kind {
            0 | 1 => (tar::EntryType::Regular, b"", &e.data),
            2 => (tar::EntryType::Directory, b"", b""),
            3 => (tar::EntryType::Symlink, &e.data, b""),
            4 => (tar::EntryType::Link, &e.data, b""),
            5 => (tar::EntryType::Fifo, b"", b""),
            6 => (tar::EntryType::Char, b"", b""),
            _ => (tar::EntryType::Block, b"", b""),
        };
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        append_raw(&mut b, h, e.path.as_bytes(), link, data);
    }
    b.into_inner().unwrap_or_default()
}

/// One layer: entries, compression (0 none, 1 gzip, 2 zstd), a wrong diff_id, edits of the
/// compressed blob.
type LayerSpec = (Vec<Entry>, u8, bool, Vec<Edit>);

fn layer() -> impl Strategy<Value = LayerSpec> {
    (
        vec(entry(), 0..8),
        0u8..3,
        prop::bool::weighted(0.1),
        prop_oneof![3 => Just(Vec::new()), 1 => edits(2)],
    )
}

fn check((layers, max_unpacked): (Vec<LayerSpec>, u64)) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).map_err(|e| e.to_string())?;
    std::fs::write(tmp.path().join("outside.txt"), "canary").map_err(|e| e.to_string())?;
    std::fs::create_dir(tmp.path().join("victim")).map_err(|e| e.to_string())?;
    let blobs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for (i, (entries, compression, bad_diff, blob_edits)) in layers.iter().enumerate() {
        let tar = build_tar(entries);
        let diff_id = if *bad_diff {
            format!("sha256:{}", "0".repeat(64))
        } else {
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar)))
        };
        let (blob, media_type) = match compression {
            0 => (tar, "application/vnd.oci.image.layer.v1.tar"),
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let _ = e.write_all(&tar);
                (
                    e.finish().unwrap_or_default(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            _ => (
                ruzstd::encoding::compress_to_vec(
                    tar.as_slice(),
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let blob = mutate(blob, blob_edits);
        let path = blobs.path().join(format!("{i}"));
        std::fs::write(&path, &blob).map_err(|e| e.to_string())?;
        specs.push(promised::image::Layer {
            digest: format!("sha256:{i}"),
            media_type: media_type.to_string(),
            diff_id,
            path,
        });
    }
    match promised::image::apply_layers(
        "fuzz.example/image:1",
        "sha256:m",
        &root,
        &specs,
        max_unpacked,
    ) {
        Ok(_) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let mut beside: Vec<String> = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    beside.sort();
    if beside != ["outside.txt", "root", "victim"] {
        return Err(format!("the directory beside the root changed: {beside:?}"));
    }
    let outside = tmp.path().join("outside.txt");
    let meta = std::fs::symlink_metadata(&outside).map_err(|e| e.to_string())?;
    if !meta.is_file() || std::fs::read(&outside).map_err(|e| e.to_string())? != b"canary" {
        return Err("outside.txt beside the root changed".into());
    }
    let victim = tmp.path().join("victim");
    if !std::fs::symlink_metadata(&victim)
        .map_err(|e| e.to_string())?
        .is_dir()
        || std::fs::read_dir(&victim)
            .map_err(|e| e.to_string())?
            .next()
            .is_some()
    {
        return Err("victim/ beside the root changed".into());
    }
    Ok(())
}

#[test]
fn layer_tar() {
    let caps = select(&[0u64, 100, 10_000, 1 << 20][..]);
    fuzz("layer_tar", 150, (vec(layer(), 1..4), caps), check);
}
