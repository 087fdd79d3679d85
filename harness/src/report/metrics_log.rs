//! The pretraining metrics log (`pretrain/metrics.jsonl`) as the report's curves: MLM loss and
//! learning rate against the optimizer step, throughput against elapsed time.
//!
//! The log is JSON lines; only `kind = "step"` records feed the curves, other kinds (`start`,
//! `checkpoint`, `stop`, anything newer) are counted and skipped. A line that is not a JSON
//! object (truncated by a crash, binary garbage, over [`MAX_LINE`] bytes) is skipped and
//! counted, so the report can say how much it left out. A log that is missing or unreadable is
//! not an error: the report says "no metrics log" and why.
//!
//! Long runs log many thousands of steps; each curve is thinned to at most [`MAX_POINTS`]
//! evenly spaced points, keeping the first and the last, so the HTML page stays small.
//!
//! The same values are also kept against budget time ([`ByBudget`]: x = the step record's
//! `budget_fraction`, the share of the allowed device time used when the step ended), which is
//! how the paper draws its loss curves; the loss there also comes smoothed ([`smooth`], a
//! centred moving average computed before thinning), and the log's first loss is kept as the
//! initial loss.
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Most points kept per curve.
pub const MAX_POINTS: usize = 2000;
/// Longest line read (a step record is a few hundred bytes).
pub const MAX_LINE: usize = 1 << 20;

/// One curve: (x, y) points in log order, finite values only.
pub type Curve = Vec<(f64, f64)>;

/// What the report shows of the metrics log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsLog {
    /// Why there are no curves (`None` when the log was read).
    pub missing: Option<String>,
    /// `step` records read.
    pub steps: usize,
    /// Lines skipped because they were not a JSON object with a string `kind`.
    pub malformed: usize,
    /// Records of other kinds (`start`, `checkpoint`, `stop`, unknown), skipped.
    pub other: usize,
    /// Step records whose value was absent or not finite, per curve (loss, lr, tokens/s).
    pub gaps: [usize; 3],
    /// MLM loss against `optimizer_step`.
    pub loss: Curve,
    /// Learning rate against `optimizer_step`.
    pub lr: Curve,
    /// Tokens per second against `elapsed_s`.
    pub throughput: Curve,
    /// The first finite loss of the log (the untrained model's loss).
    pub initial_loss: Option<f64>,
    /// The curves against budget time; `None` when no step record has a finite
    /// `budget_fraction` (logs written before it was recorded).
    pub by_budget: Option<ByBudget>,
    /// SHA-256 (hex) of the bytes read, so the report can set the log beside the manifest's
    /// `metrics-log` subject (`None` when the log was not read to its end).
    pub sha256: Option<String>,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Curves against the share of the budget used (x = `budget_fraction`, 0–1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ByBudget {
    pub loss: Curve,
    /// `loss` smoothed by [`smooth`] over [`ByBudget::window`] records.
    pub loss_smooth: Curve,
    /// Width of the smoothing window (records).
    pub window: usize,
    pub lr: Curve,
    pub throughput: Curve,
}

impl MetricsLog {
    /// A log that could not be read, with the reason.
    pub fn missing(reason: impl Into<String>) -> Self {
        MetricsLog {
            missing: Some(reason.into()),
            ..Default::default()
        }
    }

    /// One line of text for people: what was read and what was skipped.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.missing {
            return format!("No metrics log: {why}.");
        }
        let mut s = format!("{} step records read", self.steps);
        if self.malformed > 0 {
            s += &format!("; {} malformed lines skipped", self.malformed);
        }
        if self.other > 0 {
            let records = if self.other == 1 { "record" } else { "records" };
            s += &format!("; {} {records} of other kinds ignored", self.other);
        }
        let names = ["loss", "learning rate", "tokens/s"];
        for (n, g) in names.iter().zip(self.gaps) {
            if g > 0 {
                s += &format!("; {g} steps without a finite {n}");
            }
        }
        let longest = self
            .loss
            .len()
            .max(self.lr.len())
            .max(self.throughput.len());
        if self.steps > longest && longest == MAX_POINTS {
            s += &format!("; curves thinned to at most {MAX_POINTS} points");
        }
        s + "."
    }
}

/// Read the metrics log at `path` (`None`: the record has no run directory).
pub fn read(path: Option<&Path>) -> MetricsLog {
    let Some(path) = path else {
        return MetricsLog::missing("the record was not opened from a run directory");
    };
    if !path.exists() {
        return MetricsLog::missing(format!("{} does not exist", path.display()));
    }
    let file = match crate::io::open_input(path) {
        Ok(f) => f,
        Err(e) => return MetricsLog::missing(format!("cannot open {e:#}")),
    };
    let mut reader = BufReader::new(Hashing {
        inner: file,
        hasher: sha2::Sha256::default(),
    });
    let mut log = match parse(&mut reader) {
        Ok(l) => l,
        Err(e) => return MetricsLog::missing(format!("cannot read {}: {e}", path.display())),
    };
    {
        use sha2::Digest;
        // `parse` reads to the end of the file.
        log.sha256 = Some(hex::encode(reader.into_inner().hasher.finalize()));
    }
    if log.steps == 0 {
        log.missing = Some(format!(
            "{} has no step records ({} malformed lines, {} records of other kinds)",
            path.display(),
            log.malformed,
            log.other
        ));
    }
    log.finish();
    log
}

/// Smoothing window for `n` points: about 2% of the curve, at least 5 (or `n`), odd.
pub fn window_for(n: usize) -> usize {
    (n / 50).max(n.min(5)) | 1
}

/// Centred moving average of the y values of `curve` over `window` points (shrunk at the ends,
/// where fewer neighbours exist); the x values are kept.
pub fn smooth(curve: &Curve, window: usize) -> Curve {
    let n = curve.len();
    let half = window.max(1) / 2;
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for &(_, y) in curve {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + y);
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            (curve[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// Parse JSON lines from `reader` (no thinning).
pub fn parse(mut reader: impl BufRead) -> std::io::Result<MetricsLog> {
    let mut log = MetricsLog::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // Too long: skip to the end of the line.
            log.malformed += 1;
            let mut rest = Vec::new();
            while reader
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut rest)?
                > 0
            {
                if rest.last() == Some(&b'\n') {
                    break;
                }
                rest.clear();
            }
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = match serde_json::from_slice(&buf) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                log.malformed += 1;
                continue;
            }
        };
        match v["kind"].as_str() {
            Some("step") => log.add_step(&v),
            Some(_) => log.other += 1,
            None => log.malformed += 1,
        }
    }
    Ok(log)
}

impl MetricsLog {
    /// Smooth the budget-time loss, then thin every curve to [`MAX_POINTS`].
    pub fn finish(&mut self) {
        thin(&mut self.loss, MAX_POINTS);
        thin(&mut self.lr, MAX_POINTS);
        thin(&mut self.throughput, MAX_POINTS);
        if let Some(b) = &mut self.by_budget {
            b.window = window_for(b.loss.len());
            b.loss_smooth = smooth(&b.loss, b.window);
            for c in [
                &mut b.loss,
                &mut b.loss_smooth,
                &mut b.lr,
                &mut b.throughput,
            ] {
                thin(c, MAX_POINTS);
            }
        }
    }

    fn add_step(&mut self, v: &Value) {
        self.steps += 1;
        let num = |k: &str| v[k].as_f64().filter(|x| x.is_finite());
        if self.initial_loss.is_none() {
            self.initial_loss = num("loss");
        }
        if let Some(f) = num("budget_fraction") {
            let b = self.by_budget.get_or_insert_with(ByBudget::default);
            for (y, c) in [
                (num("loss"), &mut b.loss),
                (num("lr"), &mut b.lr),
                (num("tokens_per_second"), &mut b.throughput),
            ] {
                if let Some(y) = y {
                    c.push((f, y));
                }
            }
        }
        let step = num("optimizer_step");
        let pairs = [
            (step, num("loss"), 0),
            (step, num("lr"), 1),
            (num("elapsed_s"), num("tokens_per_second"), 2),
        ];
        for (x, y, i) in pairs {
            match (x, y) {
                (Some(x), Some(y)) => {
                    [&mut self.loss, &mut self.lr, &mut self.throughput][i].push((x, y))
                }
                _ => self.gaps[i] += 1,
            }
        }
    }
}

/// Keep at most `max` (≥ 2) evenly spaced points of `curve`, always the first and the last.
pub fn thin(curve: &mut Curve, max: usize) {
    let n = curve.len();
    let max = max.max(2);
    if n <= max {
        return;
    }
    let kept: Curve = (0..max).map(|i| curve[i * (n - 1) / (max - 1)]).collect();
    *curve = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_ends_and_bound() {
        let mut c: Curve = (0..10_001).map(|i| (i as f64, 0.0)).collect();
        thin(&mut c, 2000);
        assert_eq!(c.len(), 2000);
        assert_eq!(c[0].0, 0.0);
        assert_eq!(c[1999].0, 10_000.0);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
        let mut short: Curve = vec![(1.0, 1.0), (2.0, 2.0)];
        thin(&mut short, 2000);
        assert_eq!(short.len(), 2);
    }

    #[test]
    fn parse_counts_kinds_and_malformed_lines() {
        let text = concat!(
            "{\"kind\":\"start\"}\n",
            "{\"kind\":\"step\",\"optimizer_step\":1,\"elapsed_s\":0.5,\"loss\":9.0,\"lr\":0.001,\"tokens_per_second\":100}\n",
            "not json\n",
            "\n",
            "[1,2]\n",
            "{\"no_kind\":1}\n",
            "{\"kind\":\"step\",\"optimizer_step\":2,\"elapsed_s\":1.0,\"loss\":null,\"lr\":0.002,\"tokens_per_second\":120}\n",
            "{\"kind\":\"future-kind\"}\n",
            "{\"kind\":\"step\",\"optimizer_step\":3,\"elap"
        );
        let log = parse(text.as_bytes()).unwrap();
        assert_eq!(log.steps, 2);
        assert_eq!(log.malformed, 4);
        assert_eq!(log.other, 2);
        assert_eq!(log.loss, vec![(1.0, 9.0)]);
        assert_eq!(log.lr, vec![(1.0, 0.001), (2.0, 0.002)]);
        assert_eq!(log.throughput, vec![(0.5, 100.0), (1.0, 120.0)]);
        assert_eq!(log.gaps, [1, 0, 0]);
    }

    #[test]
    fn budget_curves_smoothing_and_initial_loss() {
        let mut text = String::from("{\"kind\":\"step\",\"optimizer_step\":1,\"lr\":0.1}\n");
        for s in 2..=101 {
            let loss = if s % 2 == 0 { 9.0 } else { 7.0 };
            text += &format!(
                "{{\"kind\":\"step\",\"optimizer_step\":{s},\"loss\":{loss},\"budget_fraction\":{}}}\n",
                s as f64 / 101.0
            );
        }
        let mut log = parse(text.as_bytes()).unwrap();
        log.finish();
        // The first finite loss, not the first step's (which has none).
        assert_eq!(log.initial_loss, Some(9.0));
        let b = log.by_budget.unwrap();
        assert_eq!(b.loss.len(), 100);
        assert!(b.lr.is_empty(), "the one lr value has no budget_fraction");
        assert_eq!(b.window, 5);
        assert_eq!(b.loss_smooth.len(), 100);
        // At the ends the window shrinks to three: (9 + 7 + 9) / 3 first, (7 + 9 + 7) / 3 last.
        assert_eq!(b.loss_smooth[0], (b.loss[0].0, 25.0 / 3.0));
        assert_eq!(b.loss_smooth[99], (b.loss[99].0, 23.0 / 3.0));
        // Inside: (3 × 9 + 2 × 7) / 5 or (2 × 9 + 3 × 7) / 5; the alternation is flattened.
        for (i, &(x, y)) in b.loss_smooth.iter().enumerate().skip(2).take(96) {
            assert_eq!(x, b.loss[i].0);
            assert!((y - 8.0).abs() < 0.21, "{i}: {y}");
        }
        assert_eq!((window_for(0), window_for(3), window_for(3933)), (1, 3, 79));
        assert_eq!(
            smooth(&vec![(0.0, 1.0), (1.0, 3.0)], 1),
            vec![(0.0, 1.0), (1.0, 3.0)]
        );
        // Logs without budget_fraction have no budget curves.
        let old = parse(&b"{\"kind\":\"step\",\"optimizer_step\":1,\"loss\":2.0}\n"[..]).unwrap();
        assert!(old.by_budget.is_none());
        assert_eq!(old.initial_loss, Some(2.0));
    }

    #[test]
    fn overlong_line_is_skipped() {
        let mut text = vec![b'x'; MAX_LINE + 10];
        text.push(b'\n');
        text.extend_from_slice(b"{\"kind\":\"step\",\"optimizer_step\":1,\"loss\":2.0}\n");
        let log = parse(&text[..]).unwrap();
        assert_eq!((log.malformed, log.steps), (1, 1));
        assert_eq!(log.loss, vec![(1.0, 2.0)]);
    }

    #[test]
    fn a_fifo_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        // A FIFO (a hostile entry's metrics log) is refused, not read: it would block.
        let fifo = d.path().join("fifo.jsonl");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let why = read(Some(&fifo)).missing.unwrap_or_default();
        assert!(why.contains("FIFO"), "{why}");
    }

    #[test]
    fn missing_file_is_a_note() {
        let log = read(Some(Path::new("/nonexistent/metrics.jsonl")));
        assert!(
            log.summary().starts_with("No metrics log:"),
            "{}",
            log.summary()
        );
    }
}
