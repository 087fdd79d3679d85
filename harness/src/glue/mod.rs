//! GLUE: task data in the TSV and Parquet layouts, fine-tuning protocols, metrics, aggregates
//! and re-scorable predictions, plus the demo tasks for CPU runs.
//!
//! * [`tasks`] — task definitions, evaluation sets, the internal label order, scoring.
//! * [`metrics`] — accuracy, F1, Matthews, Pearson, Spearman (scikit-learn / scipy semantics).
//! * [`aggregate`] — the named averaging rules (`cramming`, `bert-paper`, `glue-official`).
//! * [`layout_tsv`], [`layout_parquet`] — readers for `download_glue_data.py` TSVs and the
//!   Hugging Face `nyu-mll/glue` Parquet files; [`data`] finds a task's files in either layout,
//!   hashes them and checks pins.
//! * [`predictions`] — per-example predictions TSV (idx, prediction, gold) and re-scoring.
//! * [`config`] — the `[glue]` recipe table (protocols `glue-sane`, `glue-bert`).
//! * [`head`] — the classification head (upstream `ScriptableLMForSequenceClassification` in `cramming/architectures/crammed_bert.py`, JonasGeiping/cramming 196c991).
//! * [`finetune`] — checkpoint loading, input encoding, fine-tuning trials, evaluation, results.
//! * [`bootstrap`] — resampling dev examples: the gate's paired checks and the recorded intervals.
//! * [`controls`] — the constant predictor and the no-pretraining control, and the intervals.
//! * [`demo`] — the `demo-*` tasks on data shipped with crambench (never reported as GLUE).
pub mod aggregate;
pub mod bootstrap;
pub mod config;
pub mod controls;
pub mod data;
pub mod demo;
pub mod finetune;
pub mod head;
pub mod layout_parquet;
pub mod layout_tsv;
pub mod metrics;
pub mod predictions;
pub mod tasks;
