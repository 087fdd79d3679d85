//! GLUE: task data in the TSV and Parquet layouts, fine-tuning protocols, metrics, aggregates
//! and re-scorable predictions, plus the demo tasks for CPU runs.
