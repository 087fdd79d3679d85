//! Run logs: a JSONL metrics log (one JSON object per line) and MLPerf-style `:::MLLOG` lines
//! (`mlperf_logging/mllog`: `:::MLLOG {"namespace": "", "time_ms": …, "event_type": …, "key": …,
//! "value": …, "metadata": {"file": …, "lineno": …}}`) that the `mlperf-logging` parser reads.
//!
//! Both are append-only logs. A crash can leave at most a partial last line; opening a log to
//! continue a resumed run cuts such a line off, so every line in the file is complete JSON.
use crate::error::Error;
use anyhow::Result;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only line log.
pub struct LineLog {
    path: PathBuf,
    file: std::fs::File,
}

impl LineLog {
    /// Open `path` for appending (`fresh`: truncate first). A trailing partial line (no final
    /// newline) from a crash is removed.
    pub fn open(path: &Path, fresh: bool) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if !fresh && path.exists() {
            let bytes = crate::io::read_limited(path, u64::MAX)?;
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                let keep = bytes
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                f.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if fresh {
            file.set_len(0).map_err(|e| Error::io(path, e))?;
        }
        Ok(LineLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one line (a newline is added).
    pub fn line(&mut self, text: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(text.len() + 1);
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        self.file
            .write_all(&buf)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Flush to disk (fsync).
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// MLPerf event types.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    PointInTime,
    IntervalStart,
    IntervalEnd,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::PointInTime => "POINT_IN_TIME",
            Event::IntervalStart => "INTERVAL_START",
            Event::IntervalEnd => "INTERVAL_END",
        }
    }
}

/// Format one `:::MLLOG` line. `metadata` (an object or null) gets `file` and `lineno` of the
/// caller, as `mllog` records them.
#[track_caller]
pub fn mllog_line(event: Event, key: &str, value: Value, metadata: Value) -> String {
    let loc = std::panic::Location::caller();
    let mut meta = match metadata {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    meta.insert("file".into(), json!(loc.file()));
    meta.insert("lineno".into(), json!(loc.line()));
    // Key order as mllog writes it (serde_json keeps insertion order only with preserve_order,
    // so the line is assembled by hand).
    format!(
        ":::MLLOG {{\"namespace\": \"\", \"time_ms\": {}, \"event_type\": \"{}\", \"key\": {}, \"value\": {}, \"metadata\": {}}}",
        now_ms(),
        event.as_str(),
        Value::String(key.to_string()),
        value,
        Value::Object(meta)
    )
}

/// The MLLOG file of a run.
pub struct MlLog {
    log: LineLog,
}

impl MlLog {
    pub fn open(path: &Path, fresh: bool) -> Result<Self> {
        Ok(MlLog {
            log: LineLog::open(path, fresh)?,
        })
    }

    /// Log one event (caller's file and line in the metadata).
    #[track_caller]
    pub fn event(&mut self, event: Event, key: &str, value: Value, metadata: Value) -> Result<()> {
        let line = mllog_line(event, key, value, metadata);
        self.log.line(&line)
    }

    pub fn sync(&mut self) -> Result<()> {
        self.log.sync()
    }

    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_last_line_is_cut_on_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.jsonl");
        std::fs::write(&p, b"{\"a\":1}\n{\"b\":").unwrap();
        let mut log = LineLog::open(&p, false).unwrap();
        log.line("{\"c\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
        let mut log = LineLog::open(&p, true).unwrap();
        log.line("x").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x\n");
    }

    #[test]
    fn mllog_line_has_mllog_layout() {
        let l = mllog_line(
            Event::IntervalEnd,
            "run_stop",
            Value::Null,
            json!({"status": "success"}),
        );
        let body = l.strip_prefix(":::MLLOG ").unwrap();
        assert!(
            body.starts_with("{\"namespace\": \"\", \"time_ms\": "),
            "{l}"
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event_type"], "INTERVAL_END");
        assert_eq!(v["key"], "run_stop");
        assert_eq!(v["metadata"]["status"], "success");
        assert_eq!(v["metadata"]["file"], file!());
        assert!(v["metadata"]["lineno"].as_u64().unwrap() > 0);
    }
}
