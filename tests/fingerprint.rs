//! End-to-end tests of `crambench fingerprint` and `crambench fingerprint diff`, run through the
//! built binary: the fields a fingerprint must have, no host identifiers unless asked for, and
//! the exit codes of `diff`.
//!
//! These run on the CPU-only build machines, where `hardware.gpus` must be `[]`.
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

fn crambench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crambench"))
        .args(args)
        .output()
        .expect("run crambench")
}

fn fingerprint_json(args: &[&str]) -> (String, Value) {
    let out = crambench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "crambench {args:?} failed: {stderr}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 output");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (text, value)
}

/// Does `text` contain `word` with no letter or digit directly before or after it? A short host
/// name such as `vm` must not be "found" inside `avx512_vnni` or `vmx`.
fn contains_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric();
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn host_name() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(h.trim().to_string()).filter(|h| !h.is_empty())
}

/// The user name: `$USER`, else the `/etc/passwd` entry of our uid (from `/proc/self/status`).
fn user_name() -> Option<String> {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Some(u);
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
    })
}

/// This machine's non-loopback IP addresses: IPv4 from the kernel's local routing table
/// (`/proc/net/fib_trie`, the address line above each `/32 host LOCAL`), IPv6 from
/// `/proc/net/if_inet6`.
fn ip_addresses() -> BTreeSet<IpAddr> {
    let mut ips = BTreeSet::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = trie.lines().collect();
        for pair in lines.windows(2) {
            if pair[1].trim() == "/32 host LOCAL" {
                if let Ok(ip) = pair[0]
                    .trim()
                    .trim_start_matches(['|', '-', '+', ' '])
                    .parse::<IpAddr>()
                {
                    ips.insert(ip);
                }
            }
        }
    }
    if let Ok(inet6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in inet6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            if let Ok(bits) = u128::from_str_radix(hex, 16) {
                ips.insert(IpAddr::V6(bits.into()));
            }
        }
    }
    ips.retain(|ip| !ip.is_loopback() && !ip.is_unspecified());
    ips
}

/// MAC addresses of this machine's interfaces, except the all-zero one.
fn mac_addresses() -> BTreeSet<String> {
    let mut macs = BTreeSet::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for entry in dir.flatten() {
            if let Ok(mac) = std::fs::read_to_string(entry.path().join("address")) {
                let mac = mac.trim().to_lowercase();
                if !mac.is_empty() && mac != "00:00:00:00:00:00" {
                    macs.insert(mac);
                }
            }
        }
    }
    macs
}

/// Every string in a JSON value (keys and values), for word checks.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(xs) => xs.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                strings(x, out);
            }
        }
        _ => {}
    }
}

#[test]
fn fingerprint_has_the_required_fields() {
    let (_, fp) = fingerprint_json(&["fingerprint", "--json"]);
    assert_eq!(fp["schema"], "crambench.fingerprint/v1");
    let class = fp["hardware_class"].as_str().expect("hardware_class");
    assert!(class.starts_with("cpu-"), "{class}");

    let cpu = &fp["hardware"]["cpu"];
    assert!(
        cpu["model"].as_str().is_some_and(|m| !m.is_empty()),
        "{cpu}"
    );
    assert!(
        cpu["logical_cores"].as_u64().is_some_and(|n| n >= 1),
        "{cpu}"
    );
    assert!(
        cpu["physical_cores"].as_u64().is_some_and(|n| n >= 1),
        "{cpu}"
    );
    assert!(cpu["features"].is_array(), "{cpu}");
    assert!(
        fp["hardware"]["memory"]["total_bytes"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{}",
        fp["hardware"]
    );
    assert_eq!(fp["hardware"]["gpus"], Value::Array(vec![]), "no GPU here");

    let os = &fp["environment"]["os"];
    assert!(os["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{os}");
    assert!(os["arch"].as_str().is_some_and(|a| !a.is_empty()), "{os}");
    assert!(os["name"].is_string(), "{os}");
    assert!(fp["environment"]["variables"].is_object());
    assert!(fp["environment"]["resources"]["available_parallelism"].as_u64() >= Some(1));

    let sw = &fp["software"];
    assert_eq!(sw["crambench_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(sw["device"], "cpu");
    assert!(sw["build"]["profile"].is_string());
    assert!(sw["libtorch"]["version"].is_string(), "{sw}");
    assert_eq!(sw["libtorch"]["tch_version"], "0.24.0");
    assert_eq!(sw["libtorch"]["cuda_available"], false);
    assert!(sw["cuda_backend"]["loaded"].is_boolean());
    assert!(sw.get("git").is_some());
    assert!(fp.get("host").is_none());
}

#[test]
fn fingerprint_has_no_host_identifiers() {
    let (text, fp) = fingerprint_json(&["fingerprint", "--json"]);
    let mut all = Vec::new();
    strings(&fp, &mut all);
    let lower = text.to_lowercase();

    if let Some(host) = host_name() {
        let found: Vec<&String> = all.iter().filter(|s| contains_word(s, &host)).collect();
        assert!(found.is_empty(), "host name {host:?} appears in {found:?}");
        if host.len() >= 6 {
            assert!(
                !text.contains(&host),
                "host name {host:?} appears in the fingerprint"
            );
        }
    }
    if let Some(user) = user_name() {
        let found: Vec<&String> = all.iter().filter(|s| contains_word(s, &user)).collect();
        assert!(found.is_empty(), "user name {user:?} appears in {found:?}");
    }
    for ip in ip_addresses() {
        let ip = ip.to_string();
        assert!(
            !contains_word(&text, &ip),
            "IP address {ip} appears in the fingerprint"
        );
    }
    for mac in mac_addresses() {
        assert!(
            !lower.contains(&mac),
            "MAC address {mac} appears in the fingerprint"
        );
    }
    assert!(
        !text.contains("/home/") && !text.contains("/root/"),
        "absolute home paths"
    );
}

#[test]
fn include_host_adds_them() {
    let (text, fp) = fingerprint_json(&["fingerprint", "--json", "--include-host"]);
    let host = &fp["host"];
    assert!(host.is_object(), "no host group: {text}");
    if let Some(name) = host_name() {
        assert_eq!(host["hostname"], name.as_str());
        assert!(text.contains(&name));
    }
    assert!(host["interfaces"].is_array());
    let macs = mac_addresses();
    if let Some(mac) = macs.iter().next() {
        assert!(
            text.to_lowercase().contains(mac),
            "MAC {mac} missing: {}",
            host
        );
    }
}

#[test]
fn table_output_names_the_sections() {
    let out = crambench(&["fingerprint"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for section in ["Hardware", "Software", "Environment"] {
        assert!(text.contains(section), "{text}");
    }
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("serialise")).expect("write");
}

fn diff(a: &Path, b: &Path, json: bool) -> (i32, String) {
    let (a, b) = (a.to_string_lossy(), b.to_string_lossy());
    let mut args = vec!["fingerprint", "diff", &a, &b];
    if json {
        args.push("--json");
    }
    let out = crambench(&args);
    let code = out.status.code().expect("exit code");
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn diff_exit_codes_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, fp) = fingerprint_json(&["fingerprint", "--json"]);
    let a = dir.path().join("a.json");
    write_json(&a, &fp);

    // Identical: exit 0, nothing changed.
    let same = dir.path().join("same.json");
    write_json(&same, &fp);
    let (code, json) = diff(&a, &same, true);
    assert_eq!(code, 0, "{json}");
    let d: Value = serde_json::from_str(&json).expect("diff JSON");
    assert_eq!(d["hardware_class_changed"], false);
    for group in ["hardware", "software", "environment"] {
        assert_eq!(d[group], Value::Array(vec![]), "{group}: {json}");
    }

    // An environment variable only: exit 0, reported in the environment group.
    let mut env = fp.clone();
    env["environment"]["variables"]["OMP_NUM_THREADS"] = Value::from("3");
    let env_path = dir.path().join("env.json");
    write_json(&env_path, &env);
    let (code, table) = diff(&a, &env_path, false);
    assert_eq!(code, 0, "{table}");
    let env_section = table
        .split("Environment")
        .nth(1)
        .expect("an Environment section");
    assert!(
        env_section.contains("environment.variables.OMP_NUM_THREADS"),
        "{table}"
    );
    let (_, json) = diff(&a, &env_path, true);
    let d: Value = serde_json::from_str(&json).expect("diff JSON");
    assert_eq!(
        d["environment"][0]["path"],
        "environment.variables.OMP_NUM_THREADS"
    );
    assert_eq!(d["environment"][0]["b"], "3");
    assert_eq!(d["hardware"], Value::Array(vec![]));

    // Another hardware class: exit 1.
    let mut hw = fp.clone();
    hw["hardware_class"] = Value::from("gpu-nvidia-h200x1-140g-700w-00000000");
    let hw_path = dir.path().join("hw.json");
    write_json(&hw_path, &hw);
    let (code, table) = diff(&a, &hw_path, false);
    assert_eq!(code, 1, "{table}");
    assert!(
        table.contains("gpu-nvidia-h200x1-140g-700w-00000000"),
        "{table}"
    );

    // Not a fingerprint: bad input (exit 2), naming the file.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"x\": 1}").expect("write");
    let out = crambench(&[
        "fingerprint",
        "diff",
        &a.to_string_lossy(),
        &bad.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}
