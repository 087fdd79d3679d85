//! GLUE data: the TSV layout of `download_glue_data.py` (committed fixtures with the real
//! files' quirks) and the Hugging Face Parquet layout (generated here with the `parquet`
//! crate), mapped onto one internal label order; SHA-256 pins.
mod common;
#[path = "fixtures/glue/gen.rs"]
mod gen;

use crambench::glue::data::{self, Layout};
use crambench::glue::layout_tsv::{self, SplitKind};
use crambench::glue::tasks::{Target, Task};
use std::collections::BTreeMap;

fn labels(ex: &[crambench::glue::tasks::Example]) -> Vec<Option<Target>> {
    ex.iter().map(|e| e.label).collect()
}

#[test]
fn tsv_layout_reads_every_task_with_its_quirks() {
    let root = gen::tsv_root();
    let c = |v: &[usize]| {
        v.iter()
            .map(|&x| Some(Target::Class(x)))
            .collect::<Vec<_>>()
    };
    // CoLA: no header; label column 1, sentence column 3; a stray quote is kept verbatim.
    let cola = data::load(&root, Task::Cola, None).unwrap();
    assert_eq!(cola.layout, Layout::GlueTsv);
    assert_eq!(labels(&cola.train), c(&[1, 0, 1, 0]));
    assert_eq!(cola.train[1].text_a, "They drank the pub.");
    assert_eq!(
        cola.dev[0].1[0].text_a,
        "The \"sailors rode the breeze clear of the rocks."
    );
    assert_eq!(cola.train[0].text_b, None);
    // MRPC: the BOM before `Quality` does not hide the label column.
    let mrpc = data::load(&root, Task::Mrpc, None).unwrap();
    assert_eq!(labels(&mrpc.train), c(&[1, 0, 1, 0]));
    assert!(mrpc.train[0]
        .text_a
        .starts_with("Amrozi accused his brother , whom he called \" the witness \""));
    assert!(mrpc.train[0]
        .text_b
        .as_deref()
        .unwrap()
        .starts_with("Referring to him"));
    // QQP: the row split by an embedded newline gives two malformed lines, skipped and named.
    let qqp = data::load(&root, Task::Qqp, None).unwrap();
    assert_eq!(qqp.train.len(), 4);
    assert_eq!(
        qqp.train.iter().map(|e| e.idx).collect::<Vec<_>>(),
        [0, 1, 4, 5]
    );
    assert_eq!(qqp.skipped.len(), 2);
    assert!(
        qqp.skipped[0].at.ends_with("QQP/train.tsv:4"),
        "{:?}",
        qqp.skipped
    );
    assert!(
        qqp.skipped[1].at.ends_with("QQP/train.tsv:5"),
        "{:?}",
        qqp.skipped
    );
    assert_eq!(labels(&qqp.dev[0].1), c(&[0, 0, 1]));
    // STS-B: float scores from column `score`.
    let stsb = data::load(&root, Task::Stsb, None).unwrap();
    assert_eq!(
        labels(&stsb.dev[0].1),
        [5.0, 4.75, 5.0, 2.4].map(|v| Some(Target::Score(v)))
    );
    // MNLI: 12-column train (gold_label is column 12, not label1) and 16-column dev files;
    // names mapped to entailment 0, neutral 1, contradiction 2.
    let mnli = data::load(&root, Task::Mnli, None).unwrap();
    assert_eq!(labels(&mnli.train), c(&[1, 0, 0, 0, 2]));
    assert_eq!(
        mnli.dev.iter().map(|(s, _)| s.id).collect::<Vec<_>>(),
        ["mnli-m", "mnli-mm"]
    );
    assert_eq!(labels(&mnli.dev[0].1), c(&[1, 2, 0]));
    assert_eq!(labels(&mnli.dev[1].1), c(&[2, 2, 1]));
    // QNLI / RTE: entailment 0, not_entailment 1. WNLI: 1 = entailment stays 1.
    let qnli = data::load(&root, Task::Qnli, None).unwrap();
    assert_eq!(labels(&qnli.train), c(&[0, 1, 1, 0]));
    assert_eq!(
        qnli.dev[0].1[1].text_a,
        "What is the name of the \"Ultima\" ?"
    );
    let rte = data::load(&root, Task::Rte, None).unwrap();
    assert_eq!(labels(&rte.train), c(&[1, 0, 0]));
    let wnli = data::load(&root, Task::Wnli, None).unwrap();
    assert_eq!(labels(&wnli.train), c(&[1, 1, 1, 0]));
    assert_eq!(Task::Wnli.labels()[1], "entailment");
    let sst2 = data::load(&root, Task::Sst2, None).unwrap();
    assert_eq!(
        sst2.train[0].text_a,
        "hide new secretions from the parental units "
    );
    assert_eq!(
        sst2.dev[0].1[1].text_a,
        "unflinchingly bleak and \" desperate "
    );
    for t in Task::ALL_GLUE {
        let d = data::load(&root, t, None).unwrap();
        assert!(
            !d.train.is_empty() && d.dev.iter().all(|(_, v)| !v.is_empty()),
            "{}",
            t.id()
        );
        if t != Task::Qqp {
            assert!(d.skipped.is_empty(), "{}: {:?}", t.id(), d.skipped);
        }
    }
}

#[test]
fn malformed_dev_rows_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dev.tsv");
    std::fs::write(
        &p,
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\n",
    )
    .unwrap();
    let err = layout_tsv::read(Task::Rte, &p, SplitKind::Dev).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("dev.tsv:3") && msg.contains("3 columns"),
        "{msg}"
    );
    assert_eq!(
        crambench::error::exit_code_of(&err),
        crambench::ExitCode::BadInput
    );
    // An unknown label in a dev file, too.
    std::fs::write(&p, "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n").unwrap();
    let msg = format!(
        "{:#}",
        layout_tsv::read(Task::Rte, &p, SplitKind::Dev).unwrap_err()
    );
    assert!(
        msg.contains("dev.tsv:2") && msg.contains("`maybe`"),
        "{msg}"
    );
    // The same rows in a training file are skipped and counted.
    let l = layout_tsv::read(Task::Rte, &p, SplitKind::Train).unwrap();
    assert_eq!((l.examples.len(), l.skipped.len()), (0, 1));
    // A header without the expected column.
    std::fs::write(&p, "index\tpremise\thypothesis\tlabel\n").unwrap();
    let msg = format!(
        "{:#}",
        layout_tsv::read(Task::Rte, &p, SplitKind::Dev).unwrap_err()
    );
    assert!(
        msg.contains("dev.tsv:1") && msg.contains("sentence1"),
        "{msg}"
    );
}

#[test]
fn parquet_layout_gives_the_same_examples() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = gen::tsv_root();
    gen::write_parquet_layout(dir.path(), &tsv);
    for t in Task::ALL_GLUE {
        let a = data::load(&tsv, t, None).unwrap();
        let b = data::load(dir.path(), t, None).unwrap();
        assert_eq!(b.layout, Layout::HfParquet);
        assert_eq!(b.files.len(), 1 + t.eval_sets().len(), "{}", t.id());
        let pairs = std::iter::once((&a.train, &b.train))
            .chain(a.dev.iter().map(|x| &x.1).zip(b.dev.iter().map(|x| &x.1)));
        for (x, y) in pairs {
            assert_eq!(x.len(), y.len(), "{}", t.id());
            for (ex, ey) in x.iter().zip(y) {
                assert_eq!(
                    (ex.idx, &ex.text_a, &ex.text_b),
                    (ey.idx, &ey.text_a, &ey.text_b),
                    "{}",
                    t.id()
                );
                match (ex.label, ey.label) {
                    // float32 on disk: the widened value, within f32 precision.
                    (Some(Target::Score(p)), Some(Target::Score(q))) => {
                        assert!((p - q).abs() < 1e-6)
                    }
                    (l, m) => assert_eq!(l, m, "{}", t.id()),
                }
            }
        }
    }
}

#[test]
fn parquet_with_a_different_label_order_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = data::load(&gen::tsv_root(), Task::Mnli, None).unwrap();
    let p = dir.path().join("mnli/train-00000-of-00001.parquet");
    // The transformers processor order, which must not be silently accepted.
    gen::write_split(
        &p,
        Task::Mnli,
        &tsv.train,
        Some(&["contradiction", "entailment", "neutral"]),
    );
    let msg = format!(
        "{:#}",
        crambench::glue::layout_parquet::read_files(Task::Mnli, &[p], SplitKind::Train)
            .unwrap_err()
    );
    assert!(msg.contains("ClassLabel names"), "{msg}");
}

#[test]
fn super_glue_rte_parquet_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = data::load(&gen::tsv_root(), Task::Rte, None).unwrap();
    let rte = dir.path().join("rte");
    gen::write_split_with(
        &rte.join("train-00000-of-00001.parquet"),
        Task::Rte,
        &tsv.train,
        None,
        "premise",
        Some("hypothesis"),
    );
    gen::write_split_with(
        &rte.join("validation-00000-of-00001.parquet"),
        Task::Rte,
        &tsv.dev[0].1,
        None,
        "premise",
        Some("hypothesis"),
    );
    let d = data::load(dir.path(), Task::Rte, None).unwrap();
    assert_eq!(d.train, tsv.train);
    assert_eq!(d.dev[0].1, tsv.dev[0].1);
}

#[test]
fn pins_are_listed_and_checked() {
    let root = gen::tsv_root();
    let pins = data::pin_dir(&root).unwrap();
    assert_eq!(pins.len(), 19, "{pins:?}");
    assert!(pins.iter().any(|p| p.path == "MNLI/dev_mismatched.tsv"));
    let sha = crambench::provenance::hash::sha256_hex(
        &std::fs::read(root.join("CoLA/train.tsv")).unwrap(),
    );
    assert_eq!(
        pins.iter()
            .find(|p| p.path == "CoLA/train.tsv")
            .unwrap()
            .sha256,
        sha
    );
    let mut map: BTreeMap<String, String> = pins
        .iter()
        .map(|p| (p.path.clone(), format!("sha256:{}", p.sha256)))
        .collect();
    data::load(&root, Task::Cola, Some(&map)).unwrap();
    map.insert(
        "CoLA/dev.tsv".into(),
        "sha256:".to_string() + &"0".repeat(64),
    );
    let err = data::load(&root, Task::Cola, Some(&map)).unwrap_err();
    assert!(format!("{err:#}").contains("does not match the pin"));
    assert_eq!(
        crambench::error::exit_code_of(&err),
        crambench::ExitCode::CheckFailed
    );
    map.remove("CoLA/dev.tsv");
    assert!(format!(
        "{:#}",
        data::load(&root, Task::Cola, Some(&map)).unwrap_err()
    )
    .contains("not pinned"));
    let toml = data::pins_toml(&pins);
    assert!(
        toml.starts_with("[glue.pins]\n\"CoLA/dev.tsv\" = \"sha256:"),
        "{toml}"
    );
}

#[test]
fn missing_data_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let err = data::load(dir.path(), Task::Sst2, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("SST-2/train.tsv") && msg.contains("sst2/train-*.parquet"),
        "{msg}"
    );
    assert_eq!(
        crambench::error::exit_code_of(&err),
        crambench::ExitCode::BadInput
    );
}
