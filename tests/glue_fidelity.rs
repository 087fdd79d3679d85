//! GLUE fine-tuning as upstream cramming does it (issue 13's divergence table): the warm-up
//! carried over from the first task (D1), pair truncation (D5), the classification head's width
//! (D3) and v1 bert-c5's attention ignoring the key-padding mask (D4).
mod common;

use crambench::glue::config::GlueConfig;
use crambench::glue::finetune::{upstream_rank, WarmupPlan};
use crambench::glue::tasks::Task;

/// GLUE training-set sizes (HF `glue` train splits).
const TRAIN_SIZES: [(Task, usize); 8] = [
    (Task::Sst2, 67349),
    (Task::Cola, 8551),
    (Task::Mrpc, 3668),
    (Task::Qqp, 363846),
    (Task::Stsb, 5749),
    (Task::Mnli, 392702),
    (Task::Qnli, 104743),
    (Task::Rte, 2490),
];

/// (task, optimizer steps, warm-up steps) in the order the tasks run.
fn plan(cfg: &GlueConfig) -> Vec<(Task, u64, u64)> {
    let mut tasks = TRAIN_SIZES.to_vec();
    tasks.sort_by_key(|(t, _)| upstream_rank(*t));
    let mut w = WarmupPlan::default();
    tasks
        .into_iter()
        .map(|(t, n)| {
            // The reference: len(trainloader) · epochs, the loader dropping the last batch.
            let total = (n / cfg.batch_size) as u64 * cfg.epochs as u64;
            (t, total, w.next(cfg, total))
        })
        .collect()
}

/// D1: by default every task reuses CoLA's `int(0.1 · 2670) = 267` warm-up steps, as upstream's
/// `get_schedule_fn` does by overwriting the shared config on the first task.
#[test]
fn glue_warmup_is_colas_267_steps_reused_by_default() {
    let cfg = GlueConfig::default();
    assert!(cfg.frozen_warmup, "the reference's warm-up is the default");
    let p = plan(&cfg);
    assert_eq!(p[0].0, Task::Cola, "CoLA runs first, as in the reference");
    assert_eq!(p[0].1, 2670);
    for (t, _, w) in &p {
        assert_eq!(*w, 267, "{t:?}");
    }
    // The order of the reference's task list (eval/GLUE_sane.yaml).
    let order: Vec<Task> = p.iter().map(|x| x.0).collect();
    assert_eq!(
        order,
        [
            Task::Cola,
            Task::Mnli,
            Task::Mrpc,
            Task::Qnli,
            Task::Qqp,
            Task::Rte,
            Task::Sst2,
            Task::Stsb
        ]
    );
    // The crammed recipes (and the paper recipes) keep the reference's behaviour.
    for r in [
        "crammed-bert",
        "crammed-bert-v1",
        "bert-original",
        "izsak-2021",
    ] {
        let path = common::repo_root().join(format!("baselines/{r}.toml"));
        let recipe = crambench::recipe::Recipe::load(&path).unwrap();
        let g = GlueConfig::from_recipe(&recipe).unwrap();
        assert!(g.frozen_warmup, "{r}");
    }
}

/// D1, the named switch: `frozen_warmup = false` gives each task `int(0.1 · steps)` of its own
/// steps (values of Python's `int(0.1 * steps)`).
#[test]
fn glue_per_task_warmup_is_a_named_switch() {
    let cfg = GlueConfig::from_toml("frozen_warmup = false", "t").unwrap();
    let got: Vec<(Task, u64, u64)> = plan(&cfg);
    let expected = [
        (Task::Cola, 2670, 267),
        (Task::Mnli, 122715, 12271),
        (Task::Mrpc, 1145, 114),
        (Task::Qnli, 32730, 3273),
        (Task::Qqp, 113700, 11370),
        (Task::Rte, 775, 77),
        (Task::Sst2, 21045, 2104),
        (Task::Stsb, 1795, 179),
    ];
    assert_eq!(got, expected);
    // A warm-up of 0 (glue-bert) stays 0 in both modes.
    let b = GlueConfig::from_toml("protocol = \"glue-bert\"", "t").unwrap();
    assert!(plan(&b).iter().all(|x| x.2 == 0));
}

/// D5: the cut of a pair is `tokenizers`' `longest_first`: when both segments are long each gets
/// half the budget and the longer one (B on a tie) the odd token; the old one-token-at-a-time
/// rule gave A the extra token in both of these cases.
#[test]
fn pair_truncation_is_tokenizers_longest_first() {
    use crambench::glue::finetune::truncated_lengths;
    // max_length 128 → 125 tokens for the two segments.
    assert_eq!(truncated_lengths(100, 100, 125).unwrap(), (62, 63));
    assert_eq!(truncated_lengths(90, 100, 125).unwrap(), (62, 63));
    assert_eq!(truncated_lengths(100, 90, 125).unwrap(), (63, 62));
    // Only the longer one is cut when the shorter fits in what is left.
    assert_eq!(truncated_lengths(70, 60, 125).unwrap(), (65, 60));
    assert_eq!(truncated_lengths(200, 64, 125).unwrap(), (63, 62));
    assert_eq!(truncated_lengths(300, 0, 125).unwrap(), (125, 0));
    assert_eq!(truncated_lengths(10, 20, 125).unwrap(), (10, 20));
}

fn interop(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let py = common::interop_python().expect("checked by the caller");
    let mut child = std::process::Command::new(py)
        .arg(common::repo_root().join("reference/interop/truncation.py"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let text = stdin.unwrap_or("").to_string();
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "truncation.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// D5 against Python `tokenizers` on 12,000 random length pairs (segment lengths up to twice
/// `max_length`, the specials of `[CLS] A [SEP] B [SEP]` counted in it).
#[test]
fn pair_truncation_equals_python_tokenizers_on_random_lengths() {
    if common::interop_python().is_none() {
        return;
    }
    let out = interop(&["lengths", "13", "12000"], None);
    let mut n = 0;
    let mut both_cut = 0;
    for line in out.lines() {
        let v: Vec<usize> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        let (na, nb, max_len, ka, kb) = (v[0], v[1], v[2], v[3], v[4]);
        let got = crambench::glue::finetune::truncated_lengths(na, nb, max_len - 3).unwrap();
        assert_eq!(got, (ka, kb), "a {na}, b {nb}, max_length {max_len}");
        n += 1;
        if ka < na && kb < nb {
            both_cut += 1;
        }
    }
    assert_eq!(n, 12000);
    assert!(both_cut > 1000, "{both_cut} pairs with both segments cut");
}

/// D5 end to end on real sentence pairs: crambench's GLUE encoding equals Python `tokenizers`
/// encoding the pair with the same `tokenizer.json` and `truncation` to `max_length`.
#[test]
fn glue_encoding_equals_python_tokenizers_on_real_pairs() {
    if common::interop_python().is_none() {
        return;
    }
    let pairs = crambench::glue::demo::load(Task::DemoNextSentence).unwrap();
    let single = crambench::glue::demo::load(Task::DemoSentiment).unwrap();
    let mut examples: Vec<_> = pairs.train.iter().take(1500).cloned().collect();
    examples.extend(single.train.iter().take(300).cloned());
    let texts: Vec<String> = examples
        .iter()
        .flat_map(|e| std::iter::once(e.text_a.clone()).chain(e.text_b.clone()))
        .collect();
    let tok = crambench::data::tokenizer::train(texts.iter(), 400, Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tok_path = dir.path().join("tokenizer.json");
    crambench::data::tokenizer::save(&tok, &tok_path).unwrap();
    let tok = crambench::data::tokenizer::load_tokenizer(&tok_path).unwrap();
    let jsonl: String = examples
        .iter()
        .map(|e| {
            serde_json::to_string(&[e.text_a.as_str(), e.text_b.as_deref().unwrap_or("")]).unwrap()
                + "\n"
        })
        .collect();
    let mut cut_both = 0;
    for max_len in [12usize, 20, 32, 128] {
        let ours = crambench::glue::finetune::encode(&tok, &examples, max_len).unwrap();
        let theirs = interop(
            &["pairs", tok_path.to_str().unwrap(), &max_len.to_string()],
            Some(&jsonl),
        );
        let theirs: Vec<&str> = theirs.lines().collect();
        assert_eq!(theirs.len(), ours.len());
        for ((e, o), t) in examples.iter().zip(&ours).zip(&theirs) {
            let t: Vec<i64> = t.split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(
                o.ids, t,
                "max_length {max_len}: {:?} / {:?}",
                e.text_a, e.text_b
            );
            if o.ids.len() == max_len {
                cut_both += 1;
            }
        }
    }
    assert!(cut_both > 100, "{cut_both} truncated encodings");
}

/// D3: the head's width is upstream's `classification_head.head_dim` of the architecture —
/// 1024 for crammed-bert and bert-c5, the hidden size for bert-original and izsak (so 1024 for
/// izsak, where crambench used 768) — whatever the protocol.
#[test]
fn glue_head_width_is_upstreams_per_architecture() {
    use crambench::glue::config::Protocol;
    use crambench::model::{ArchConfig, ArchKind};
    for p in [Protocol::GlueSane, Protocol::GlueBert] {
        let cfg = GlueConfig::for_protocol(p);
        let w = |k: ArchKind| cfg.head_width(&ArchConfig::for_kind(k));
        assert_eq!(w(ArchKind::CrammedBert), 1024, "{p:?}");
        assert_eq!(w(ArchKind::BertC5), 1024, "{p:?}");
        assert_eq!(w(ArchKind::BertOriginal), 768, "{p:?}");
        assert_eq!(w(ArchKind::Izsak), 1024, "{p:?}");
        assert_eq!(
            cfg.head_width(&ArchConfig::preset("izsak-tiny").unwrap()),
            64
        );
    }
    let izsak =
        crambench::recipe::Recipe::load(&common::repo_root().join("baselines/izsak-2021.toml"))
            .unwrap();
    let g = GlueConfig::from_recipe(&izsak).unwrap();
    assert_eq!(g.head_width(&ArchConfig::for_kind(ArchKind::Izsak)), 1024);
    // An explicit width wins.
    let g = GlueConfig::from_toml("head_dim = 32", "t").unwrap();
    assert_eq!(g.head_width(&ArchConfig::for_kind(ArchKind::Izsak)), 32);
    assert!(GlueConfig::from_toml("head_dim = 0", "t").is_err());
}

/// D4: v1 bert-c5's flash-attention path ignores the key-padding mask in GLUE; the v1 recipe
/// keeps that (`key_padding_mask = false`), every other architecture masks padded keys.
#[test]
fn v1_bert_c5_in_glue_ignores_the_key_padding_mask() {
    use crambench::glue::finetune::classify;
    use crambench::glue::head::ClassifierHead;
    use crambench::model::{ArchConfig, ArchKind};
    use tch::{Device, Tensor};
    let load = |r: &str| {
        let p = common::repo_root().join(format!("baselines/{r}.toml"));
        GlueConfig::from_recipe(&crambench::recipe::Recipe::load(&p).unwrap()).unwrap()
    };
    let c5 = ArchConfig::for_kind(ArchKind::BertC5);
    assert!(!load("crammed-bert-v1").masks_padding(&c5));
    assert!(load("crammed-bert").masks_padding(&ArchConfig::for_kind(ArchKind::CrammedBert)));
    let default = GlueConfig::default();
    assert!(
        !default.masks_padding(&c5),
        "upstream's bert-c5 behaviour by default"
    );
    for k in [
        ArchKind::CrammedBert,
        ArchKind::BertOriginal,
        ArchKind::Izsak,
    ] {
        assert!(default.masks_padding(&ArchConfig::for_kind(k)), "{k:?}");
    }
    let on = GlueConfig::from_toml("key_padding_mask = true", "t").unwrap();
    assert!(on.masks_padding(&c5));

    // What the switch does to a padded batch of a tiny bert-c5.
    tch::manual_seed(5);
    let arch = ArchConfig::preset("bert-c5-tiny").unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let model = crambench::model::build(&vs.root(), &arch).unwrap();
    let head = ClassifierHead::new(&vs.root(), arch.hidden, 16, 2);
    // Row 0: 5 tokens + 3 padding; row 1: 8 tokens.
    let ids = Tensor::from_slice(&[4i64, 9, 10, 11, 5, 0, 0, 0, 4, 12, 13, 14, 15, 16, 17, 5])
        .view([2, 8]);
    let mask =
        Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 8]);
    tch::no_grad(|| {
        let ignored = classify(model.as_ref(), &head, &ids, &mask, false, false);
        let unmasked = head.forward(&model.encode(&ids, None, false), false);
        assert!(
            ignored.equal(&unmasked),
            "key_padding_mask = false is no mask"
        );
        let masked = classify(model.as_ref(), &head, &ids, &mask, true, false);
        // Masked: row 0 equals the same sequence without padding.
        let alone = head.forward(
            &model.encode(&ids.narrow(0, 0, 1).narrow(1, 0, 5), None, false),
            false,
        );
        let d = (masked.narrow(0, 0, 1) - &alone)
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            d < 1e-5,
            "masked row differs from the unpadded sequence by {d}"
        );
        let d = (ignored.narrow(0, 0, 1) - &alone)
            .abs()
            .max()
            .double_value(&[]);
        assert!(d > 1e-4, "ignoring the mask changes the padded row ({d})");
    });
}
