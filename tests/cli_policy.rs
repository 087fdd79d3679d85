//! The CLI's shared policies: the grouped top-level help with an example, one `--device`
//! grammar for every command that takes it, older flag names still accepted, and a closed
//! stdout ending a command quietly with exit 0.
mod common;
use std::io::Read;
use std::process::Stdio;

#[test]
fn top_level_help_groups_commands_and_shows_an_example() {
    let (code, out, err) = common::run_in(&common::repo_root(), &["--help"]);
    assert_eq!(code, 0, "{err}");
    let at = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s:?} not in help:\n{out}"))
    };
    // The everyday commands come first, then the stages, then the plumbing.
    assert!(at("Run and judge:") < at("\n  run "));
    assert!(at("\n  run ") < at("\n  compare "));
    assert!(at("\n  compare ") < at("\n  gate "));
    assert!(at("\n  gate ") < at("\n  submit "));
    assert!(at("\n  submit ") < at("Stages:"));
    assert!(at("Stages:") < at("\n  pretrain "));
    assert!(at("\n  pretrain ") < at("Plumbing:"));
    assert!(at("Plumbing:") < at("\n  hash "));
    assert!(at("Example:") < at("crambench run baselines/"));
}

#[test]
fn every_device_flag_has_one_grammar() {
    let root = common::repo_root();
    for cmd in [
        &["run", "baselines/demo-cpu.toml"][..],
        &["pretrain", "baselines/demo-cpu.toml"][..],
        &["glue", "run", "--checkpoint", "x"][..],
        &["bench", "train-step", "--arch", "crammed-bert-tiny"][..],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--device", "gpu0"]);
        let (code, _, err) = common::run_in(&root, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("expected cpu, cuda, cuda:N or auto"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn older_flag_names_still_work() {
    let root = common::repo_root();
    let (code, out, err) = common::run_in(&root, &["seeds", "--master", "7", "init"]);
    assert_eq!(code, 0, "{err}");
    let (code2, out2, _) = common::run_in(&root, &["seeds", "--seed", "7", "init"]);
    assert_eq!(code2, 0);
    assert_eq!(out, out2);
}

#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    // More output than a pipe holds, so the write meets the closed read end.
    let labels: Vec<String> = (0..4000).map(|i| format!("label-{i}")).collect();
    let mut child = common::crambench()
        .args(["seeds", "--seed", "1"])
        .args(&labels)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}
