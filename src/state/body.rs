//! Parsing and validating the shared body format `{"key": {"value": …, "ts": …, "ttl": …}}`.
//!
//! A batch is validated whole before anything is applied, and an error names the entry and the
//! field, so a client learns exactly what to fix and the state never holds half a batch.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not a JSON object mapping keys to entries: {0}")]
    NotAMap(String),
    #[error("entry {key:?}: {message}")]
    Entry { key: String, message: String },
    #[error("entry {key:?}: key is longer than {max} bytes")]
    KeyTooLong { key: String, max: usize },
    #[error("empty keys are not allowed")]
    EmptyKey,
    #[error("batch has {count} entries, more than the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
}

/// One entry as a client or peer sent it; missing `ts`/`ttl` are filled in by the store.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// `None` for a tombstone sent by a peer.
    pub value: Option<Box<RawValue>>,
    pub ts: Option<u64>,
    pub ttl: Option<u64>,
}

/// Who sent the body: only peers may send tombstones (`"deleted": true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    App,
    Peer,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_entries: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn<'a> {
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    deleted: bool,
}

/// Parses a batch body into validated entries. A key given twice yields two entries, which the
/// merge rule orders like any other two versions.
pub fn parse_batch(
    body: &[u8],
    origin: Origin,
    limits: Limits,
) -> Result<Vec<(String, Incoming)>, BodyError> {
    // One pass over the body for the common, valid case; a refused body is parsed again entry
    // by entry, so that the error names the entry and the field.
    match serde_json::from_slice::<Batch>(body) {
        Ok(Batch(entries)) => validate_all(entries.into_iter(), limits, |e| validate(e, origin)),
        Err(_) => parse_batch_by_entry(body, origin, limits),
    }
}

/// Checks the count, every key and every entry, naming the first bad one.
fn validate_all<T>(
    entries: impl ExactSizeIterator<Item = (String, T)>,
    limits: Limits,
    parse: impl Fn(T) -> Result<Incoming, String>,
) -> Result<Vec<(String, Incoming)>, BodyError> {
    if entries.len() > limits.max_entries {
        return Err(BodyError::TooManyEntries {
            count: entries.len(),
            max: limits.max_entries,
        });
    }
    let mut out = Vec::with_capacity(entries.len());
    for (key, entry) in entries {
        check_key(&key, limits)?;
        let incoming = parse(entry).map_err(|message| BodyError::Entry {
            key: key.clone(),
            message,
        })?;
        out.push((key, incoming));
    }
    Ok(out)
}

/// A body map read in one pass, every entry in order.
struct Batch<'a>(Vec<(String, EntryIn<'a>)>);

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Batch<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of entries")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Batch<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Batch(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// The entry-by-entry parse, for precise errors.
fn parse_batch_by_entry(
    body: &[u8],
    origin: Origin,
    limits: Limits,
) -> Result<Vec<(String, Incoming)>, BodyError> {
    let map: foldhash::HashMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| BodyError::NotAMap(e.to_string()))?;
    validate_all(map.into_iter(), limits, |raw| {
        parse_entry_raw(raw.get(), origin)
    })
}

/// Parses the body of a single-key write (`PUT /<key>`), which is one entry.
pub fn parse_entry(body: &[u8], key: &str, limits: Limits) -> Result<Incoming, BodyError> {
    check_key(key, limits)?;
    let text = std::str::from_utf8(body).map_err(|_| BodyError::Entry {
        key: key.into(),
        message: "body is not UTF-8".into(),
    })?;
    parse_entry_raw(text, Origin::App).map_err(|message| BodyError::Entry {
        key: key.into(),
        message,
    })
}

fn check_key(key: &str, limits: Limits) -> Result<(), BodyError> {
    if key.is_empty() {
        return Err(BodyError::EmptyKey);
    }
    if key.len() > limits.max_key_bytes {
        return Err(BodyError::KeyTooLong {
            key: truncate(key, 64),
            max: limits.max_key_bytes,
        });
    }
    Ok(())
}

fn parse_entry_raw(text: &str, origin: Origin) -> Result<Incoming, String> {
    let e: EntryIn = serde_json::from_str(text).map_err(|e| strip_position(&e.to_string()))?;
    validate(e, origin)
}

fn validate(e: EntryIn, origin: Origin) -> Result<Incoming, String> {
    if e.deleted && origin == Origin::App {
        return Err("field `deleted` is only accepted from peers; use DELETE /<key>".into());
    }
    let value = (!e.deleted).then(|| compact(e.value));
    Ok(Incoming {
        value,
        ts: e.ts,
        ttl: e.ttl,
    })
}

/// serde_json's "at line 1 column 9" points into the entry, not the body, so it only confuses.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Removes insignificant whitespace so that equal values written with different formatting
/// are stored, compared and sent as the same bytes.
pub fn compact(raw: &RawValue) -> Box<RawValue> {
    let text = raw.get();
    if !text
        .bytes()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    RawValue::from_string(out).expect("removing whitespace outside strings keeps JSON valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_key_bytes: 16,
        max_entries: 10,
    };

    fn app(body: &str) -> Result<Vec<(String, Incoming)>, BodyError> {
        parse_batch(body.as_bytes(), Origin::App, LIMITS)
    }

    #[test]
    fn accepts_the_original_format() {
        let v =
            app(r#"{"cat": {"value": "garfield", "ts": 1601241450390, "ttl": 60000}}"#).unwrap();
        assert_eq!(v.len(), 1);
        let (k, e) = &v[0];
        assert_eq!(k, "cat");
        assert_eq!(e.value.as_ref().unwrap().get(), "\"garfield\"");
        assert_eq!(e.ts, Some(1601241450390));
        assert_eq!(e.ttl, Some(60000));
        let v = app(r#"{"dog": {"value": {"a": [1, 2]}}}"#).unwrap();
        assert_eq!(v[0].1.value.as_ref().unwrap().get(), r#"{"a":[1,2]}"#);
        assert_eq!((v[0].1.ts, v[0].1.ttl), (None, None));
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let cases = [
            ("garbage", "not a JSON object"),
            ("[1]", "not a JSON object"),
            (r#"{"a": {"ts": 1}}"#, "entry \"a\": missing field `value`"),
            (
                r#"{"a": {"value": 1, "ttl": -1}}"#,
                "entry \"a\": invalid value: integer `-1`",
            ),
            (
                r#"{"a": {"value": 1, "ts": "now"}}"#,
                "entry \"a\": invalid type: string \"now\"",
            ),
            (
                r#"{"a": {"value": 1, "tll": 5}}"#,
                "entry \"a\": unknown field `tll`",
            ),
            (
                r#"{"a": {"value": 1, "deleted": true}}"#,
                "only accepted from peers",
            ),
            (r#"{"": {"value": 1}}"#, "empty keys"),
            (
                r#"{"aaaaaaaaaaaaaaaaaaaa": {"value": 1}}"#,
                "longer than 16 bytes",
            ),
            (r#"{"a": 5}"#, "entry \"a\": invalid type: integer `5`"),
        ];
        for (body, needle) in cases {
            let e = app(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
            if needle.starts_with("entry") {
                assert!(!e.contains("line 1 column"), "{e}");
            }
        }
        let many: String = format!(
            "{{{}}}",
            (0..11)
                .map(|i| format!("\"k{i}\":{{\"value\":1}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(matches!(
            app(&many),
            Err(BodyError::TooManyEntries { count: 11, max: 10 })
        ));
    }

    #[test]
    fn a_key_given_twice_yields_both_versions_in_order() {
        let body =
            br#"{"k": {"value": 1, "ts": 5}, "j": {"value": 2}, "k": {"value": 3, "ts": 4}}"#;
        let got = parse_batch(body, Origin::Peer, LIMITS).unwrap();
        let keys: Vec<(&str, Option<u64>)> = got.iter().map(|(k, e)| (k.as_str(), e.ts)).collect();
        assert_eq!(keys, [("k", Some(5)), ("j", None), ("k", Some(4))]);
        let escaped = parse_batch(br#"{"a\"b": {"value": "x"}}"#, Origin::App, LIMITS).unwrap();
        assert_eq!(escaped[0].0, "a\"b");
    }

    #[test]
    fn peers_may_send_tombstones() {
        let v = parse_batch(
            br#"{"a": {"value": null, "ts": 5, "ttl": null, "deleted": true}}"#,
            Origin::Peer,
            LIMITS,
        )
        .unwrap();
        assert!(v[0].1.value.is_none());
        assert_eq!(v[0].1.ts, Some(5));
    }

    #[test]
    fn compaction_keeps_strings_intact() {
        let raw = RawValue::from_string(r#"{ "a b" : [1, "x \" y\\" ] }"#.into()).unwrap();
        assert_eq!(compact(&raw).get(), r#"{"a b":[1,"x \" y\\"]}"#);
    }

    #[test]
    fn single_entry_bodies() {
        let e = parse_entry(br#"{"value": 3, "ttl": 10}"#, "k", LIMITS).unwrap();
        assert_eq!((e.value.unwrap().get(), e.ttl), ("3", Some(10)));
        assert!(parse_entry(b"{}", "k", LIMITS).is_err());
        assert!(parse_entry(br#"{"value":1}"#, "", LIMITS).is_err());
    }
}
