//! The demo suite: two small fine-tuning tasks on real text shipped with crambench, for CPU
//! runs without GLUE files. They are named `demo-*` and never reported as GLUE: their aggregate
//! is the `demo` rule, never a GLUE one.
//!
//! * `demo-sentiment` — the UCI Sentiment Labelled Sentences (Kotzias et al. 2015; CC BY 4.0),
//!   `harness/assets/glue-demo/sentiment.tsv` (attribution in that directory's README): 3,000
//!   sentences, 0 negative / 1 positive; row `i` is dev when `i % 5 == 4` (2,400 / 600).
//! * `demo-next-sentence` — "is B the sentence that follows A?", derived from the embedded State
//!   of the Union corpus ([`crate::data::source::SOTU_ZST`]) by the rule in [`next_sentence`].
//!
//! Both are checked against their SHA-256 before use.
use crate::data::source::{SOTU_SHA256, SOTU_ZST};
use crate::error::Error;
use crate::glue::data::{DataFile, Layout, TaskData};
use crate::glue::tasks::{Example, Target, Task};
use crate::provenance::hash::sha256_hex;
use anyhow::Result;

/// `sentiment.tsv`, embedded.
pub const SENTIMENT_TSV: &[u8] = include_bytes!("../../assets/glue-demo/sentiment.tsv");
/// Its SHA-256 (also in `harness/assets/glue-demo/README.md`).
pub const SENTIMENT_SHA256: &str =
    "1018490091d0333e1b5d4cdf5f952611df97ec9052e205e654f7247b3b1607ef";

/// Dev examples of `demo-sentiment` (every fifth of the 3,000 rows).
pub const SENTIMENT_DEV: usize = 600;

/// Pairs per split of `demo-next-sentence`.
pub const NEXT_SENTENCE_TRAIN: usize = 2400;
pub const NEXT_SENTENCE_DEV: usize = 600;
/// Sentences kept for pairs have this many words (inclusive).
const MIN_WORDS: usize = 6;
const MAX_WORDS: usize = 40;
/// Seed of the generator that picks negative sentences (part of the task's definition).
const NEGATIVE_SEED: u64 = 0x6e65_7874_2d73_656e; // "next-sen"

/// Load a demo task.
pub fn load(task: Task) -> Result<TaskData> {
    match task {
        Task::DemoSentiment => sentiment(),
        Task::DemoNextSentence => next_sentence(),
        t => Err(Error::input(t.id(), "not a demo task").into()),
    }
}

fn sentiment() -> Result<TaskData> {
    let sha = sha256_hex(SENTIMENT_TSV);
    if sha != SENTIMENT_SHA256 {
        return Err(Error::Check(format!(
            "embedded sentiment.tsv: sha256 {sha}, expected {SENTIMENT_SHA256}"
        ))
        .into());
    }
    let text = std::str::from_utf8(SENTIMENT_TSV).map_err(|e| Error::input("sentiment.tsv", e))?;
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let label = match f.get(1) {
            Some(&"0") => 0,
            Some(&"1") => 1,
            _ => {
                return Err(
                    Error::input(format!("sentiment.tsv:{}", i + 2), "malformed row").into(),
                )
            }
        };
        let ex = Example {
            idx: i as u64,
            text_a: f.get(2).copied().unwrap_or_default().to_string(),
            text_b: None,
            label: Some(Target::Class(label)),
        };
        if i % 5 == 4 {
            dev.push(ex);
        } else {
            train.push(ex);
        }
    }
    let set = Task::DemoSentiment.eval_sets()[0];
    Ok(TaskData {
        task: Task::DemoSentiment,
        layout: Layout::Embedded,
        train,
        dev: vec![(set, dev)],
        files: vec![DataFile {
            path: "embedded:glue-demo/sentiment.tsv".into(),
            size: SENTIMENT_TSV.len() as u64,
            sha256: sha,
        }],
        skipped: Vec::new(),
    })
}

/// Split a text into sentences: a sentence ends at `.`, `!` or `?` followed by whitespace (or
/// the end of the text); surrounding whitespace is trimmed and inner whitespace collapsed.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            let s = cur.split_whitespace().collect::<Vec<_>>().join(" ");
            if !s.is_empty() {
                out.push(s);
            }
            cur.clear();
        }
    }
    let s = cur.split_whitespace().collect::<Vec<_>>().join(" ");
    if !s.is_empty() {
        out.push(s);
    }
    out
}

fn kept(s: &str) -> bool {
    (MIN_WORDS..=MAX_WORDS).contains(&s.split_whitespace().count())
}

/// `demo-next-sentence`. Rule, per split (dev: addresses whose 0-based index ≡ 4 mod 5):
/// 1. split every address into [`sentences`]; a *candidate* is a sentence followed by another,
///    both 6–40 words, in address and sentence order;
/// 2. take every k-th candidate (k = ⌊candidates / wanted⌋, at least 1) up to the wanted count;
/// 3. the j-th selected pair is positive (B = the following sentence) when j is even; when j is
///    odd, B is a 6–40-word sentence of another address of the same split, drawn by splitmix64
///    seeded with a fixed constant (redrawn while it is from A's address).
pub fn next_sentence() -> Result<TaskData> {
    let sha = sha256_hex(SOTU_ZST);
    if sha != SOTU_SHA256 {
        return Err(Error::Check(format!(
            "embedded sotu: sha256 {sha}, expected {SOTU_SHA256}"
        ))
        .into());
    }
    let raw = zstd::decode_all(SOTU_ZST).map_err(|e| Error::input("embedded:sotu", e))?;
    let text = std::str::from_utf8(&raw).map_err(|e| Error::input("embedded:sotu", e))?;
    let mut addresses: Vec<Vec<String>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::input(format!("embedded:sotu:{}", i + 1), e))?;
        let t = v["text"]
            .as_str()
            .ok_or_else(|| Error::input(format!("embedded:sotu:{}", i + 1), "no text"))?;
        addresses.push(sentences(t));
    }
    let build = |dev: bool, wanted: usize, seed: u64| -> Result<Vec<Example>> {
        let ids: Vec<usize> = (0..addresses.len())
            .filter(|a| (a % 5 == 4) == dev)
            .collect();
        let mut cands = Vec::new();
        let mut pool = Vec::new();
        for &a in &ids {
            let s = &addresses[a];
            for i in 0..s.len() {
                if kept(&s[i]) {
                    pool.push((a, i));
                    if i + 1 < s.len() && kept(&s[i + 1]) {
                        cands.push((a, i));
                    }
                }
            }
        }
        if cands.len() < wanted || pool.is_empty() {
            return Err(Error::input(
                "embedded:sotu",
                format!("only {} sentence pairs", cands.len()),
            )
            .into());
        }
        let k = (cands.len() / wanted).max(1);
        let mut rng = seed;
        let mut out = Vec::with_capacity(wanted);
        for (j, &(a, i)) in cands.iter().step_by(k).take(wanted).enumerate() {
            let (b, label) = if j % 2 == 0 {
                (addresses[a][i + 1].clone(), 1)
            } else {
                loop {
                    let (pa, pi) =
                        pool[(crate::rng::splitmix64(&mut rng) % pool.len() as u64) as usize];
                    if pa != a {
                        break (addresses[pa][pi].clone(), 0);
                    }
                }
            };
            out.push(Example {
                idx: j as u64,
                text_a: addresses[a][i].clone(),
                text_b: Some(b),
                label: Some(Target::Class(label)),
            });
        }
        Ok(out)
    };
    let train = build(false, NEXT_SENTENCE_TRAIN, NEGATIVE_SEED)?;
    let dev = build(true, NEXT_SENTENCE_DEV, NEGATIVE_SEED ^ 1)?;
    let set = Task::DemoNextSentence.eval_sets()[0];
    Ok(TaskData {
        task: Task::DemoNextSentence,
        layout: Layout::Embedded,
        train,
        dev: vec![(set, dev)],
        files: vec![DataFile {
            path: "embedded:sotu".into(),
            size: SOTU_ZST.len() as u64,
            sha256: sha,
        }],
        skipped: Vec::new(),
    })
}
