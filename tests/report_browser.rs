//! The run report and the compare page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by scripts/chromium.sh, which `make test` runs) driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`: no port, no network). For each page:
//! it loads without a console message of level warning or error (a Content-Security-Policy
//! violation, a failed load, a script error are all such messages), every chart is an SVG drawn
//! with a non-zero size and its lines, and the headline numbers are rendered, visible, on the
//! first screen. A screenshot of each page is saved under `target/` for people to look at
//! (`target/report-screenshot.png`, `target/compare-screenshot.png`; the paths are printed).
//!
//! A page that breaks its own CSP is checked too, so the console check is known to fail when
//! it should. The browser reaches nothing outside: the pages are local files, every host name
//! resolves to nothing (`--host-resolver-rules`), and the pages' CSP forbids loading anything.
//!
//! Without a browser the tests are skipped with a note, unless CRAMBENCH_REQUIRE_BROWSER=1 (set
//! by `make test`), which makes a missing browser a failure. CRAMBENCH_CHROMIUM names another
//! Chromium-based binary.
mod common;
use common::fake_run::{keypair, write_fake_run, FakeRun};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one DevTools reply may take before the test gives up (a hang guard, not a timing
/// assertion: a page this size loads in well under a second).
const REPLY_WAIT: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    let name = std::env::var("CRAMBENCH_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(&name))
            .chain(std::iter::once(PathBuf::from(&name)))
            .find(|p| p.is_absolute() && p.is_file())
    });
    if found.is_none() {
        if std::env::var("CRAMBENCH_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("no `{name}` on PATH: run scripts/chromium.sh (make test does)");
        }
        eprintln!("SKIPPED: no `{name}` on PATH; run scripts/chromium.sh to run the browser test");
    }
    found
}

/// One headless browser on a DevTools pipe, with one page attached.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Every event received so far, in order.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start(bin: &Path) -> Browser {
        use std::os::fd::AsRawFd;
        let profile = tempfile::tempdir().unwrap();
        // Chromium reads commands from fd 3 and writes replies and events to fd 4.
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let (r, w) = (cmd_read.as_raw_fd(), out_write.as_raw_fd());
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--mute-audio",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The pipe
        // ends are first moved above 9 so that placing one on fd 3 cannot clobber the other;
        // dup2 leaves the new descriptors without FD_CLOEXEC.
        unsafe {
            c.pre_exec(move || {
                let hi_r = libc::fcntl(r, libc::F_DUPFD, 10);
                let hi_w = libc::fcntl(w, libc::F_DUPFD, 10);
                if hi_r < 0 || hi_w < 0 || libc::dup2(hi_r, 3) < 0 || libc::dup2(hi_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        drop(cmd_read);
        drop(out_write);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(std::fs::File::from(out_read));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                            continue;
                        };
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(cmd_write),
            from: rx,
            next: 0,
            session: String::new(),
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().unwrap().to_string();
        let att = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = att["sessionId"].as_str().unwrap().to_string();
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Send one command (to the page's session once attached) and wait for its reply.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let v = self
                .from
                .recv_timeout(REPLY_WAIT)
                .unwrap_or_else(|e| panic!("no reply to {method} from chromium: {e}"));
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Wait for the event `method`, keeping every event.
    fn wait_event(&mut self, method: &str) {
        if self.events.iter().any(|e| e["method"] == method) {
            return;
        }
        loop {
            let v = self
                .from
                .recv_timeout(REPLY_WAIT)
                .unwrap_or_else(|e| panic!("no {method} from chromium: {e}"));
            let hit = v["method"] == method;
            self.events.push(v);
            if hit {
                return;
            }
        }
    }

    /// Load `page` and wait for its load event; returns the console messages of level warning
    /// or error that came with it (console API, uncaught exceptions, log entries such as CSP
    /// violations and failed loads).
    fn open(&mut self, page: &Path) -> Vec<String> {
        self.events.clear();
        let url = format!("file://{}", page.canonicalize().unwrap().display());
        let nav = self.call("Page.navigate", json!({ "url": url }));
        assert!(nav.get("errorText").is_none(), "loading {url}: {nav}");
        self.wait_event("Page.loadEventFired");
        // A round trip after the load: everything the page logged while loading has arrived.
        self.eval("1");
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Log.entryAdded"
                        if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                    {
                        Some(format!(
                            "{} {}: {}",
                            p["entry"]["source"], p["entry"]["level"], p["entry"]["text"]
                        ))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Evaluate `expr` in the page (DevTools evaluation is not subject to the page's CSP) and
    /// return its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Save a PNG of the whole page to `path`.
    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let m = self.call("Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap(),
            size["height"].as_f64().unwrap(),
        );
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        println!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .to
            .write_all(b"{\"id\":999999,\"method\":\"Browser.close\"}\0");
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `<svg>` of the page: (width, height, drawn lines) as laid out.
const SVG_BOXES: &str = "JSON.stringify([...document.querySelectorAll('svg')].map(s => {
    const r = s.getBoundingClientRect();
    return [r.width, r.height, s.querySelectorAll('polyline, path, line').length];
}))";

/// Where the first rendered occurrence of `needle` is: {top, width, height, visible} of the
/// text range, or null when no text node holds it.
fn locate(needle: &str) -> String {
    format!(
        "(() => {{
            const needle = {};
            const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            for (let n = w.nextNode(); n; n = w.nextNode()) {{
                const i = n.data.indexOf(needle);
                if (i < 0) continue;
                const r = document.createRange();
                r.setStart(n, i);
                r.setEnd(n, i + needle.length);
                const b = r.getBoundingClientRect();
                const st = getComputedStyle(n.parentElement);
                return {{top: b.top, width: b.width, height: b.height,
                         visible: st.visibility === 'visible' && st.display !== 'none'
                                  && parseFloat(st.opacity) > 0}};
            }}
            return null;
        }})()",
        serde_json::to_string(needle).unwrap()
    )
}

/// Check one page: no console warnings or errors, `charts` SVG charts of non-zero size with
/// lines drawn, and every headline visible on the first screen (900 px). Saves a screenshot.
fn check_page(b: &mut Browser, page: &Path, charts: usize, headlines: &[&str], shot: &str) {
    let messages = b.open(page);
    assert!(
        messages.is_empty(),
        "{}: console messages: {messages:#?}",
        page.display()
    );
    let boxes: Vec<(f64, f64, u64)> =
        serde_json::from_str(b.eval(SVG_BOXES).as_str().unwrap()).unwrap();
    assert_eq!(boxes.len(), charts, "{}: {boxes:?}", page.display());
    for (i, (w, h, lines)) in boxes.iter().enumerate() {
        assert!(*w > 100.0 && *h > 50.0, "chart {i} drawn at {w}×{h}");
        assert!(*lines > 0, "chart {i} has no lines");
    }
    for needle in headlines {
        let at = b.eval(&locate(needle));
        assert!(at.is_object(), "{needle:?} is not on the page");
        let (top, w, h) = (
            at["top"].as_f64().unwrap(),
            at["width"].as_f64().unwrap(),
            at["height"].as_f64().unwrap(),
        );
        assert!(
            at["visible"] == true && w > 0.0 && h > 0.0,
            "{needle:?} not rendered: {at}"
        );
        assert!(
            (0.0..900.0).contains(&top),
            "{needle:?} is not on the first screen (top {top})"
        );
    }
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    b.screenshot(&target.join(shot));
}

/// A fake demo run with what `crambench run` records beyond the fake: the controls and
/// intervals, the resolved recipe and the data record, and the metrics log as a subject.
fn rich_run(dir: &Path, key: &Path, name: &str, loss: f64) -> PathBuf {
    let run = dir.join(name);
    let spec = FakeRun {
        final_mlm_loss: loss,
        metrics_subject: true,
        ..FakeRun::default()
    };
    write_fake_run(&run, &spec, key);
    run
}

fn with_controls(rec: &mut crambench::record::RunRecord) {
    let g = &mut rec.statement["predicate"]["glue"];
    let agg = g["aggregate"]["value"].as_f64().unwrap();
    g["uncertainty"] = json!({
        "method": "m", "resamples": 1000, "level": 0.95, "seed_label": "glue/bootstrap/<set>",
        "tasks": {}, "aggregate": {"lo": agg - 3.0, "hi": agg + 3.0}
    });
    g["controls"] = json!({
        "constant": {"description": "majority class", "tasks": {},
                     "aggregate": {"rule": "demo", "value": 50.0}},
        "no_pretraining": {"description": "untrained initialisation", "tasks": {},
                           "aggregate": {"rule": "demo", "value": 49.25},
                           "above": {"delta": agg - 49.25,
                                     "ci95": {"lo": agg - 52.25, "hi": agg - 46.25}}}
    });
    let p = &mut rec.statement["predicate"];
    p["recipe"]["resolved"]["arch"] = json!({"kind": "crammed-bert", "layers": 2, "hidden": 64});
    p["recipe"]["resolved"]["train"] = json!({"batch_size": 64, "seq_len": 64, "lr": 0.001});
    p["data"] = json!({"name": "wp4096x64-demo", "num_blocks": 400, "seq_len": 64,
                       "processing": {"counts": {"documents": 233, "tokens": 25_639}}});
    // The readers use the typed predicate, parsed when the record was opened.
    rec.predicate = serde_json::from_value(rec.statement["predicate"].clone()).unwrap();
}

#[test]
fn report_and_compare_pages_render_in_chromium() {
    let Some(bin) = chromium() else { return };
    let d = tempfile::tempdir().unwrap();
    let (key, _) = keypair(d.path(), "k");
    let a = rich_run(d.path(), &key, "a", 5.5);
    let b_run = rich_run(d.path(), &key, "b", 4.25);

    let mut rec = crambench::record::RunRecord::open(&a).unwrap();
    with_controls(&mut rec);
    let reference = crambench::reference::default_for_recipe("demo-cpu");
    let (_, html) = crambench::report::write(&rec, reference, &d.path().join("report")).unwrap();
    let (_, agg) = rec.aggregate().unwrap();
    let agg = format!("{agg:.2}");
    let above = format!(
        "{:.2} ± 3.00 points above the no-pretraining control (49.25)",
        agg.parse::<f64>().unwrap() - 49.25
    );

    let (code, out, err) = common::run_in(d.path(), &["compare", "a", "b", "--html", "cmp.html"]);
    assert_eq!(code, 0, "{out}{err}");

    let mut b = Browser::start(&bin);
    // The report: the summary's numbers on the first screen, four charts (loss against
    // budget time with its smoothed line and initial loss, learning rate, throughput, GLUE).
    check_page(
        &mut b,
        &html,
        4,
        &[&agg, &above, "5.5000", "0.0250 of 0.0250 device-hours"],
        "report-screenshot.png",
    );
    // The smoothed line and the initial loss are drawn in the first chart.
    let legend = b.eval("document.querySelector('svg').textContent");
    let legend = legend.as_str().unwrap();
    assert!(
        legend.contains("moving average") && legend.contains("initial loss"),
        "{legend}"
    );
    let signed = b.eval(&locate("the log drawn here matches that digest"));
    assert!(
        signed.is_object(),
        "the signed metrics log is not said on the page"
    );

    // The compare page: both runs' curves overlaid, the verdict and the runs' final losses.
    check_page(
        &mut b,
        &d.path().join("cmp.html"),
        3,
        &["crambench compare: 2 runs", "4.2500", "5.5000"],
        "compare-screenshot.png",
    );
    drop(b_run);
}

#[test]
fn the_console_check_catches_a_csp_violation() {
    let Some(bin) = chromium() else { return };
    let d = tempfile::tempdir().unwrap();
    // The report's CSP with an image from elsewhere: blocked (nothing is fetched) and logged.
    let page = d.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\"></head><body>\
         <p>x</p><img src=\"https://example.invalid/pixel.png\"></body></html>",
    )
    .unwrap();
    let mut b = Browser::start(&bin);
    let messages = b.open(&page);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("Content Security Policy") || m.contains("Refused to load")),
        "the CSP violation was not seen: {messages:#?}"
    );
}
