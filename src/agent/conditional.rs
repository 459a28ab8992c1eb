//! HTTP preconditions on single keys (`If-Match`, `If-None-Match`), checked against the entity
//! tag of the key's live value: the fingerprint its agent keeps for every record, so a tag
//! changes with every version, whichever agent wrote it.
//!
//! The check is local to the agent: two apps on two agents can both pass it for the same
//! version, and last-writer-wins still decides between their writes across the group.

/// Why a precondition header was refused; rendered as the 400's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreconditionError {
    #[error(
        "{0}: expected * or a comma-separated list of quoted entity tags, as ETag gives them (\"0123456789abcdef\")"
    )]
    Syntax(&'static str),
    #[error(
        "If-Match and If-None-Match apply to single keys (PUT or DELETE /<key>), not to batches"
    )]
    Batch,
}

/// The entity tags a header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tags {
    Any,
    /// Strong tags; weak ones (`W/"…"`) are kept apart because `If-Match` never matches them.
    List {
        strong: Vec<u64>,
        weak: Vec<u64>,
    },
}

impl Tags {
    fn parse(header: &'static str, text: &str) -> Result<Tags, PreconditionError> {
        let text = text.trim();
        if text == "*" {
            return Ok(Tags::Any);
        }
        let mut strong = Vec::new();
        let mut weak = Vec::new();
        for item in text.split(',').map(str::trim) {
            let (list, quoted) = match item.strip_prefix("W/") {
                Some(rest) => (&mut weak, rest),
                None => (&mut strong, item),
            };
            let tag = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| t.len() == 16)
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .ok_or(PreconditionError::Syntax(header))?;
            list.push(tag);
        }
        Ok(Tags::List { strong, weak })
    }

    /// Strong comparison (`If-Match`).
    fn matches_strongly(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Tags::Any, Some(_)) => true,
            (Tags::List { strong, .. }, Some(tag)) => strong.contains(&tag),
        }
    }

    /// Weak comparison (`If-None-Match`).
    fn matches_weakly(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Tags::Any, Some(_)) => true,
            (Tags::List { strong, weak }, Some(tag)) => {
                strong.contains(&tag) || weak.contains(&tag)
            }
        }
    }
}

/// A request's preconditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub if_match: Option<Tags>,
    pub if_none_match: Option<Tags>,
}

/// What the request gets when its preconditions fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// 412 Precondition Failed.
    Precondition,
    /// 304 Not Modified (a read whose `If-None-Match` matched).
    NotModified,
}

impl Preconditions {
    pub fn parse(
        if_match: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<Preconditions, PreconditionError> {
        Ok(Preconditions {
            if_match: if_match.map(|t| Tags::parse("If-Match", t)).transpose()?,
            if_none_match: if_none_match
                .map(|t| Tags::parse("If-None-Match", t))
                .transpose()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Evaluates them against the key's current tag (`None`: no live value), in RFC 9110's
    /// order; `read` for GET, where a matching `If-None-Match` means 304.
    pub fn check(&self, current: Option<u64>, read: bool) -> Result<(), Failed> {
        if let Some(tags) = &self.if_match {
            if !tags.matches_strongly(current) {
                return Err(Failed::Precondition);
            }
        }
        if let Some(tags) = &self.if_none_match {
            if tags.matches_weakly(current) {
                return Err(if read {
                    Failed::NotModified
                } else {
                    Failed::Precondition
                });
            }
        }
        Ok(())
    }
}

/// The `ETag` header value of a tag.
pub fn etag(tag: u64) -> String {
    String::from_utf8(etag_bytes(tag).to_vec()).expect("hex is ASCII")
}

/// The same, without a formatter (it is on every read's path).
pub fn etag_bytes(tag: u64) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    for (i, byte) in out[1..17].iter_mut().enumerate() {
        *byte = HEX[(tag >> (60 - 4 * i)) as usize & 0xF];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0x0123_4567_89ab_cdef;
    const B: u64 = 0xfedc_ba98_7654_3210;

    fn pre(m: Option<&str>, n: Option<&str>) -> Preconditions {
        Preconditions::parse(m, n).unwrap()
    }

    #[test]
    fn create_only_and_compare_and_set() {
        let tag = etag(A);
        assert_eq!(tag, "\"0123456789abcdef\"");
        let create = pre(None, Some("*"));
        assert_eq!(create.check(None, false), Ok(()));
        assert_eq!(create.check(Some(A), false), Err(Failed::Precondition));
        let cas = pre(Some(&tag), None);
        assert_eq!(cas.check(Some(A), false), Ok(()));
        assert_eq!(cas.check(Some(B), false), Err(Failed::Precondition));
        assert_eq!(cas.check(None, false), Err(Failed::Precondition));
        let exists = pre(Some("*"), None);
        assert_eq!(exists.check(Some(B), false), Ok(()));
        assert_eq!(exists.check(None, false), Err(Failed::Precondition));
        let list = pre(Some(&format!("{}, {tag}", etag(B))), None);
        assert_eq!(list.check(Some(A), false), Ok(()));
    }

    #[test]
    fn reads_get_not_modified_and_weak_tags_only_match_weakly() {
        let weak = format!("W/{}", etag(A));
        assert_eq!(
            pre(None, Some(&weak)).check(Some(A), true),
            Err(Failed::NotModified)
        );
        assert_eq!(pre(None, Some(&etag(A))).check(Some(B), true), Ok(()));
        assert_eq!(
            pre(Some(&weak), None).check(Some(A), false),
            Err(Failed::Precondition)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for bad in [
            "abc",
            "\"0123\"",
            "0123456789abcdef",
            "\"0123456789abcdeg\"",
            "",
        ] {
            let e = Preconditions::parse(Some(bad), None).unwrap_err();
            assert!(e.to_string().starts_with("If-Match: expected *"), "{e}");
        }
        let e = Preconditions::parse(None, Some("W/x")).unwrap_err();
        assert!(e.to_string().starts_with("If-None-Match:"), "{e}");
    }
}
