//! Query parameters of the app API (`?prefix=…&limit=…`): decoded the way HTML forms and curl's
//! `--data-urlencode` encode them, each known by name, so that a typo is a 400 naming it rather
//! than a silently ignored option.

/// Why a query string was refused; rendered as the 400's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query parameter {0:?} is not valid UTF-8 after percent-decoding")]
    Encoding(String),
    #[error("unknown query parameter {name:?} (this request takes: {known})")]
    Unknown { name: String, known: String },
    #[error("query parameter {0:?} is given more than once")]
    Repeated(String),
    #[error("query parameter {name:?}: {message}")]
    Invalid { name: String, message: String },
}

/// The decoded parameters of one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes `raw` (the text after `?`): `+` is a space, `%XX` a byte.
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|()| QueryError::Encoding(name.to_string()))?;
            let value = decode(value).map_err(|()| QueryError::Encoding(name.clone()))?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(QueryError::Repeated(name));
            }
            params.push((name, value));
        }
        Ok(Query(params))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Refuses any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), QueryError> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            None => Ok(()),
            Some((name, _)) => Err(QueryError::Unknown {
                name: name.clone(),
                known: if known.is_empty() {
                    "no parameters".into()
                } else {
                    known.join(", ")
                },
            }),
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A flag: absent is false; present bare (`?keys`), `true` or `1` is true; `false` or `0`
    /// is false.
    pub fn flag(&self, name: &str) -> Result<bool, QueryError> {
        match self.text(name) {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(_) => Err(invalid(name, "expected no value, true or false")),
        }
    }

    /// A whole number in `1..=max`, or `default` when absent.
    pub fn number(&self, name: &str, default: usize, max: usize) -> Result<usize, QueryError> {
        let Some(text) = self.text(name) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid(name, &format!("expected a number from 1 to {max}"))),
        }
    }

    /// A parsed value, or `None` when absent.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, QueryError>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name)
            .map(|t| t.parse().map_err(|e: T::Err| invalid(name, &e.to_string())))
            .transpose()
    }
}

fn invalid(name: &str, message: &str) -> QueryError {
    QueryError::Invalid {
        name: name.into(),
        message: message.into(),
    }
}

fn decode(text: &str) -> Result<String, ()> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_form() {
        let q = Query::parse("prefix=a%2Fb+c&keys&limit=10&after=").unwrap();
        assert_eq!(q.text("prefix"), Some("a/b c"));
        assert!(q.flag("keys").unwrap());
        assert_eq!(q.number("limit", 1000, 10_000).unwrap(), 10);
        assert_eq!(q.text("after"), Some(""));
        assert!(!q.flag("watch").unwrap());
        assert!(Query::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = |raw: &str| Query::parse(raw).unwrap_err().to_string();
        assert!(err("prefix=%FF").contains("\"prefix\""));
        assert!(err("limit=1&limit=2").contains("\"limit\" is given more than once"));
        let q = Query::parse("limt=5").unwrap();
        let e = q.only(&["prefix", "limit"]).unwrap_err().to_string();
        assert!(e.contains("\"limt\"") && e.contains("prefix, limit"), "{e}");
        let q = Query::parse("limit=0&keys=yes").unwrap();
        assert!(
            q.number("limit", 1, 100)
                .unwrap_err()
                .to_string()
                .contains("from 1 to 100")
        );
        assert!(q.flag("keys").unwrap_err().to_string().contains("\"keys\""));
    }
}
