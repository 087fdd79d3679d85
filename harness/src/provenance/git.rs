//! Git state of the code a run was started from: the HEAD commit, branch, whether the working
//! tree differs from HEAD, and a SHA-256 over exactly how it differs.
//!
//! Read with libgit2 (git2), so no `git` executable is needed. Remote URLs are never read: they
//! can carry user names and tokens.
//!
//! # The diff hash
//!
//! The working tree is compared with HEAD's tree through the index (what `git diff HEAD`
//! shows), plus untracked files that are not ignored. Each changed path contributes, in path
//! order:
//!
//! ```text
//! <status letter> NUL <old path> NUL <new path> NUL <old mode, octal> NUL <new mode, octal> NUL
//! <new content> NUL
//! ```
//!
//! where `<new content>` is the SHA-256 (hex) of the file's bytes in the working tree (of the
//! link target for a symlink, the commit id for a submodule), or `-` for a deleted file. The
//! diff hash is the SHA-256 of that stream. Together with the HEAD commit it pins the tree the
//! run saw; it changes whenever a changed file's content, mode or name changes, and does not
//! depend on index stat caches, libgit2's patch formatting or compression.
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Git state of a working tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    /// Full hex id of the HEAD commit; `None` in a repository with no commits yet.
    pub commit: Option<String>,
    /// Branch HEAD points to (short name, e.g. `main`, also before the first commit); `None` when
    /// HEAD is detached.
    pub branch: Option<String>,
    /// `git describe --tags --always` of HEAD (nearest tag, or the abbreviated commit id);
    /// `None` without commits.
    pub describe: Option<String>,
    /// The working tree (tracked changes, staged or not, and untracked non-ignored files)
    /// differs from HEAD.
    pub dirty: bool,
    /// Number of paths that differ from HEAD.
    pub changed_paths: usize,
    /// SHA-256 (hex) of the differences (see the module docs); `None` when clean.
    pub diff_sha256: Option<String>,
}

/// The git state of the repository containing `dir`, or `None` when `dir` is not inside a git
/// repository or the repository cannot be read.
pub fn git_state(dir: &Path) -> Option<GitState> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head_commit = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let branch = head_branch(&repo);
    let describe = head_commit.as_ref().and_then(|_| describe_head(&repo));
    let (changed_paths, diff_sha256) = if repo.is_bare() {
        (0, None)
    } else {
        let tree = head_commit.as_ref().and_then(|c| c.tree().ok());
        working_tree_diff(&repo, tree.as_ref())?
    };
    Some(GitState {
        commit: head_commit.map(|c| c.id().to_string()),
        branch,
        describe,
        dirty: changed_paths > 0,
        changed_paths,
        diff_sha256,
    })
}

/// The branch HEAD refers to, read from the symbolic ref so that it works before the first
/// commit too.
fn head_branch(repo: &git2::Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok().flatten()?;
    Some(
        target
            .strip_prefix("refs/heads/")
            .unwrap_or(target)
            .to_string(),
    )
}

fn describe_head(repo: &git2::Repository) -> Option<String> {
    let mut opts = git2::DescribeOptions::new();
    opts.describe_tags().show_commit_oid_as_fallback(true);
    let describe = repo.describe(&opts).ok()?;
    let mut format = git2::DescribeFormatOptions::new();
    format.abbreviated_size(12);
    describe.format(Some(&format)).ok()
}

/// Number of changed paths and the diff hash (module docs) of the working tree against `tree`
/// (the empty tree when `None`). `None` when the diff cannot be computed.
fn working_tree_diff(
    repo: &git2::Repository,
    tree: Option<&git2::Tree<'_>>,
) -> Option<(usize, Option<String>)> {
    let workdir = repo.workdir()?;
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_typechange(true);
    let diff = repo
        .diff_tree_to_workdir_with_index(tree, Some(&mut opts))
        .ok()?;
    let mut hasher = Sha256::new();
    let mut count = 0;
    for delta in diff.deltas() {
        count += 1;
        let old = delta.old_file();
        let new = delta.new_file();
        let fields = [
            status_letter(delta.status()).to_string(),
            path_string(&old),
            path_string(&new),
            format!("{:o}", u32::from(old.mode())),
            format!("{:o}", u32::from(new.mode())),
            new_side_content(workdir, &delta),
        ];
        for field in fields {
            hasher.update(field.as_bytes());
            hasher.update([0u8]);
        }
    }
    let hash = (count > 0).then(|| hex::encode(hasher.finalize()));
    Some((count, hash))
}

fn status_letter(status: git2::Delta) -> char {
    use git2::Delta::*;
    match status {
        Unmodified => ' ',
        Added => 'A',
        Deleted => 'D',
        Modified => 'M',
        Renamed => 'R',
        Copied => 'C',
        Ignored => '!',
        Untracked => '?',
        Typechange => 'T',
        Unreadable => 'X',
        Conflicted => 'U',
    }
}

fn path_string(file: &git2::DiffFile<'_>) -> String {
    file.path_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// SHA-256 (hex) of what the working tree holds at the delta's new path; `-` when nothing.
fn new_side_content(workdir: &Path, delta: &git2::DiffDelta<'_>) -> String {
    let new = delta.new_file();
    if delta.status() == git2::Delta::Deleted {
        return "-".into();
    }
    match new.mode() {
        // A submodule: its checked-out commit is its content.
        git2::FileMode::Commit => new.id().to_string(),
        _ => {
            let Some(rel) = new.path() else {
                return "-".into();
            };
            let path = workdir.join(rel);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(&path) {
                    Ok(target) => {
                        hex::encode(Sha256::digest(target.as_os_str().as_encoded_bytes()))
                    }
                    Err(_) => "unreadable".into(),
                },
                Ok(meta) if meta.is_file() => {
                    sha256_file(&path).unwrap_or_else(|| "unreadable".into())
                }
                Ok(_) => "not-a-file".into(),
                Err(_) => "-".into(),
            }
        }
    }
}

/// Streamed SHA-256 of a file's bytes.
fn sha256_file(path: &Path) -> Option<String> {
    // A FIFO or device in the work tree is not hashed (it would block or never end).
    let mut file = crate::io::open_input(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree_id = index.write_tree().unwrap();
        let tree = repo.find_tree(tree_id).unwrap();
        let sig = git2::Signature::now("Test", "test@example.invalid").unwrap();
        let parents: Vec<git2::Commit<'_>> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    fn init(dir: &Path) -> git2::Repository {
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        git2::Repository::init_opts(dir, &opts).unwrap()
    }

    #[test]
    fn not_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        // A temp dir may itself sit inside a repository on some machines; only check that the
        // call does not panic, and returns None for a path that does not exist.
        let _ = git_state(dir.path());
        assert_eq!(git_state(&dir.path().join("missing/deeper")), None);
    }

    #[test]
    fn unborn_repository() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path());
        let s = git_state(dir.path()).unwrap();
        assert_eq!(s.commit, None);
        assert_eq!(s.describe, None);
        assert_eq!(s.branch.as_deref(), Some("main"));
        assert!(!s.dirty);
        fs::write(dir.path().join("a.txt"), "x").unwrap();
        let s = git_state(dir.path()).unwrap();
        assert!(s.dirty);
        assert!(s.diff_sha256.is_some());
    }

    #[test]
    fn clean_dirty_and_stable_hash() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        fs::write(dir.path().join(".gitignore"), "ignored/\n").unwrap();
        fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        let id = commit_all(&repo, "first");

        let clean = git_state(dir.path()).unwrap();
        assert_eq!(clean.commit, Some(id.to_string()));
        assert_eq!(clean.branch.as_deref(), Some("main"));
        assert_eq!(clean.describe.as_deref(), Some(&id.to_string()[..12]));
        assert!(!clean.dirty);
        assert_eq!(clean.diff_sha256, None);

        // Ignored files do not make the tree dirty; subdirectories are discovered from.
        fs::create_dir(dir.path().join("ignored")).unwrap();
        fs::write(dir.path().join("ignored/big.bin"), "data").unwrap();
        assert_eq!(git_state(&dir.path().join("ignored")).unwrap(), clean);

        fs::write(dir.path().join("a.txt"), "two\n").unwrap();
        let d1 = git_state(dir.path()).unwrap();
        assert!(d1.dirty);
        assert_eq!(d1.changed_paths, 1);
        let h1 = d1.diff_sha256.clone().unwrap();
        assert_eq!(h1.len(), 64);
        assert_eq!(
            git_state(dir.path()).unwrap(),
            d1,
            "stable when nothing changes"
        );

        fs::write(dir.path().join("a.txt"), "three\n").unwrap();
        let h2 = git_state(dir.path()).unwrap().diff_sha256.unwrap();
        assert_ne!(h1, h2, "changes with the modification");

        fs::write(dir.path().join("a.txt"), "two\n").unwrap();
        assert_eq!(git_state(dir.path()).unwrap().diff_sha256.unwrap(), h1);

        // Staging does not change what differs from HEAD.
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.txt")).unwrap();
        index.write().unwrap();
        assert_eq!(git_state(dir.path()).unwrap().diff_sha256.unwrap(), h1);

        // An untracked file counts, with its content.
        fs::write(dir.path().join("new.txt"), "n1").unwrap();
        let u1 = git_state(dir.path()).unwrap();
        assert_eq!(u1.changed_paths, 2);
        fs::write(dir.path().join("new.txt"), "n2").unwrap();
        let u2 = git_state(dir.path()).unwrap();
        assert_ne!(u1.diff_sha256, u2.diff_sha256);

        // Back to HEAD: clean again.
        fs::remove_file(dir.path().join("new.txt")).unwrap();
        fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.txt")).unwrap();
        index.write().unwrap();
        let again = git_state(dir.path()).unwrap();
        assert!(!again.dirty);
        assert_eq!(again.diff_sha256, None);
    }

    #[test]
    fn tags_are_described() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        let id = commit_all(&repo, "first");
        let obj = repo.find_object(id, None).unwrap();
        repo.tag_lightweight("v0.1.0", &obj, false).unwrap();
        let s = git_state(dir.path()).unwrap();
        assert_eq!(s.describe.as_deref(), Some("v0.1.0"));
    }
}
