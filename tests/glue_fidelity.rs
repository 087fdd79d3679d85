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
