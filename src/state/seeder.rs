//! The `File` data seeder: a JSON file in the PUT body format, loaded into the state at start.

use std::path::{Path, PathBuf};

use super::body::{BodyError, Incoming, Limits, Origin, parse_batch};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("data seeder {file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("data seeder {file}: {source}")]
    Body { file: PathBuf, source: BodyError },
}

/// Reads and validates a seed file; nothing is applied when any entry is invalid.
pub fn load(file: &Path, limits: Limits) -> Result<Vec<(String, Incoming)>, SeedError> {
    let bytes = std::fs::read(file).map_err(|source| SeedError::Read {
        file: file.into(),
        source,
    })?;
    parse_batch(&bytes, Origin::App, limits).map_err(|source| SeedError::Body {
        file: file.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_seed_file() {
        let limits = Limits {
            max_key_bytes: 100,
            max_entries: 100,
        };
        let dir = std::env::temp_dir().join(format!("c19-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("data.json");
        std::fs::write(&f, r#"{"a": {"value": 1}, "b": {"ts": 1}}"#).unwrap();
        let e = load(&f, limits).unwrap_err().to_string();
        assert!(
            e.contains("data.json") && e.contains("entry \"b\": missing field `value`"),
            "{e}"
        );
        std::fs::write(&f, r#"{"a": {"value": 1}}"#).unwrap();
        assert_eq!(load(&f, limits).unwrap().len(), 1);
        assert!(load(&dir.join("missing.json"), limits).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
