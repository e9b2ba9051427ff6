//! Unit tests of unpacking: tar path checks, the in-root resolver, whiteouts and opaque
//! directories, the diff_id and size checks, and multi-frame zstd.

use super::*;

#[test]
fn components_refuse_escapes() {
    assert!(path_components(b"/etc/passwd").is_err());
    assert!(path_components(b"a/../../x").is_err());
    assert!(path_components(b"..").is_err());
    assert_eq!(path_components(b"./a//b/.").unwrap().len(), 2);
}

#[test]
fn relative_symlinks_that_climb_out() {
    assert!(climbs_out(0, b".."));
    assert!(climbs_out(1, b"../../x"));
    assert!(!climbs_out(1, b"../x"));
    assert!(!climbs_out(0, b"a/../b"));
    assert!(climbs_out(0, b"a/../../b"));
}

#[test]
fn resolver_stays_in_root() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    let c = |s: &'static str| -> Vec<&OsStr> { s.split('/').map(OsStr::new).collect() };
    let ok = |s| match resolve_in_root(&root, &c(s), true) {
        Ok(p) => p,
        Err(ResolveError::Refused(r)) => panic!("{s}: {r}"),
        Err(ResolveError::Io(p, e)) => panic!("{s}: {} {e}", p.display()),
    };
    assert_eq!(ok("lib/x"), PathBuf::from("usr/lib/x"));
    assert_eq!(ok("up/etc"), PathBuf::from("etc"));
    assert!(root.join("etc").is_dir());
    assert!(matches!(
        resolve_in_root(&root, &c("loop/x"), true),
        Err(ResolveError::Refused(_))
    ));
}

fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o4755); // setuid: dropped
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o555); // read-only: made owner-writable
            }
        }
        b.append_data(&mut h, path, data.unwrap_or(b"")).unwrap();
    }
    b.into_inner().unwrap()
}

fn layer(dir: &Path, name: &str, tar: &[u8]) -> Layer {
    let path = dir.join(name);
    fs::write(&path, tar).unwrap();
    Layer {
        digest: format!("sha256:{name}"),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        diff_id: format!("sha256:{}", hex::encode(sha2::Sha256::digest(tar))),
        path,
    }
}

#[test]
fn whiteouts_and_opaque_directories() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir(&root).unwrap();
    let l1 = tar_of(&[
        ("a", None),
        ("a/old", Some(b"old")),
        ("a/sub", None),
        ("a/sub/deep", Some(b"deep")),
        ("x", Some(b"x")),
        ("keep", Some(b"keep")),
    ]);
    // New content first, the opaque marker after it; a/sub2 has no directory entry; a/sub
    // is written again, so its lower content must still go.
    let l2 = tar_of(&[
        ("a/sub2/new", Some(b"new")),
        ("a/sub/fresh", Some(b"fresh")),
        ("a/.wh..wh..opq", Some(b"")),
        (".wh.x", Some(b"")),
    ]);
    let layers = [layer(d.path(), "l1", &l1), layer(d.path(), "l2", &l2)];
    let written = apply_layers("img", "sha256:m", &root, &layers, 1 << 20).unwrap();
    assert_eq!(written, 3 + 4 + 1 + 4 + 3 + 5);
    assert!(!root.join("x").exists() && !root.join(".wh.x").exists());
    assert!(root.join("keep").exists());
    let mut names: Vec<String> = fs::read_dir(root.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["sub", "sub2"]);
    assert!(!root.join("a/sub/deep").exists());
    assert_eq!(fs::read(root.join("a/sub2/new")).unwrap(), b"new");
    let mode = fs::metadata(root.join("keep"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    let mode = fs::metadata(root.join("a")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);

    // A wrong diff_id is refused; so is a layer over the size budget.
    let root2 = d.path().join("root2");
    fs::create_dir(&root2).unwrap();
    let mut bad = layer(d.path(), "l1b", &l1);
    bad.diff_id = format!("sha256:{}", "0".repeat(64));
    let e = apply_layers("img", "sha256:m", &root2, &[bad], 1 << 20).unwrap_err();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{e}");
    let root3 = d.path().join("root3");
    fs::create_dir(&root3).unwrap();
    let e = apply_layers(
        "img",
        "sha256:m",
        &root3,
        &[layer(d.path(), "l1c", &l1)],
        1000,
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
}

#[test]
fn zstd_multiple_frames_and_skippable() {
    // Two frames of "hello " and "world" (raw blocks), with a skippable frame between.
    fn raw_frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
        // Frame header descriptor: single segment, FCS 1 byte.
        f.push(0x20);
        f.push(data.len() as u8);
        // Last block, raw, size.
        let header = 1u32 | ((data.len() as u32) << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }
    let mut s = raw_frame(b"hello ");
    s.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3]);
    s.extend(raw_frame(b"world"));
    let mut out = String::new();
    ZstdFrames::new(&s[..]).read_to_string(&mut out).unwrap();
    assert_eq!(out, "hello world");
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    // Found by the layer_tar fuzz target (tests/fuzz): `.wh...` removed the directory that
    // holds the root.
    let d = tempfile::tempdir().unwrap();
    for (i, name) in [".wh...", ".wh..", "a/.wh...", "a/.wh.."]
        .iter()
        .enumerate()
    {
        let root = d.path().join(format!("root{i}"));
        fs::create_dir(&root).unwrap();
        fs::write(d.path().join("canary"), "canary").unwrap();
        let l = tar_of(&[("a", None), ("a/f", Some(b"f")), (name, Some(b""))]);
        let e = apply_layers(
            "img",
            "sha256:m",
            &root,
            &[layer(d.path(), &format!("l{i}"), &l)],
            1 << 20,
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::UnsafeEntry { .. }), "{name}: {e}");
        assert!(e.to_string().contains("not . or .."), "{e}");
        assert!(root.join("a/f").is_file(), "{name}");
        assert_eq!(fs::read(d.path().join("canary")).unwrap(), b"canary");
    }
}
