//! `crambench hash` against independent references: coreutils `sha256sum` for files, and the
//! in-toto dirHash shell pipeline (`find | sort | xargs sha256sum | sha256sum`) for directories.
mod common;
use common::run_in;
use std::process::Command;

fn shell(dir: &std::path::Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn file_digests_match_sha256sum() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let sizes = [0usize, 1, 63, 64, 65, 1 << 20, (1 << 20) + 1, 5_000_003];
    for (i, n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n)
            .map(|j| (j.wrapping_mul(2654435761) >> 13) as u8 ^ i as u8)
            .collect();
        std::fs::write(dir.join(format!("f{i}")), data).unwrap();
    }
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("f{i}")).collect();
    let mut args = vec!["hash", "--json"];
    args.extend(names.iter().map(String::as_str));
    let (c, o, e) = run_in(dir, &args);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let reference = shell(dir, &format!("sha256sum {}", names.join(" ")));
    for (i, line) in reference.lines().enumerate() {
        let want = line.split_whitespace().next().unwrap();
        assert_eq!(v[i]["sha256"], want, "{}", names[i]);
        assert_eq!(v[i]["size"], sizes[i] as u64);
        assert_eq!(v[i]["kind"], "file");
    }
}

#[test]
fn dir_hash_matches_the_in_toto_shell_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("ds");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("b.txt"), b"bee").unwrap();
    std::fs::write(root.join("a.txt"), b"ay").unwrap();
    std::fs::write(root.join("A.txt"), b"capital").unwrap();
    std::fs::write(root.join("a b.txt"), b"space in name").unwrap();
    std::fs::write(root.join("sub/x.bin"), vec![7u8; 100_000]).unwrap();
    std::fs::write(root.join("sub-file"), b"sorts between sub and sub/ entries").unwrap();
    std::fs::write(root.join("sub/deeper/z"), b"").unwrap();
    std::fs::write(root.join("\u{e9}t\u{e9}.txt"), b"utf-8 name").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    let want = shell(
        &root,
        "find . -type f | cut -c3- | LC_ALL=C sort | tr '\\n' '\\0' | xargs -0 -r sha256sum | sha256sum | cut -f1 -d' '",
    );
    let (c, o, e) = run_in(d.path(), &["hash", "--json", "--list", "ds"]);
    assert_eq!(c, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v[0]["kind"], "dir");
    assert_eq!(v[0]["dir_hash"], want.trim());
    assert_eq!(v[0]["files"], 8);
    assert_eq!(v[0]["skipped_symlinks"][0], "link");
    assert_eq!(v[0]["entries"].as_array().unwrap().len(), 8);
    // the table names the directory and its dirHash; --list adds per-file lines
    let (_, table, _) = run_in(d.path(), &["hash", "--list", "ds"]);
    assert!(
        table.contains(&format!("dirHash:{}", want.trim())),
        "{table}"
    );
    assert!(table.contains("sub/deeper/z"), "{table}");
    assert!(table.contains("symbolic link not hashed: link"), "{table}");
}

#[test]
fn missing_paths_are_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let (c, _, e) = run_in(d.path(), &["hash", "does-not-exist"]);
    assert_eq!(c, 2, "{e}");
    assert!(e.contains("does-not-exist"), "{e}");
}
