//! The one parser of request fields, for every endpoint that takes them: a query string, a
//! form body, or a JSON object body (told apart by `Content-Type`).
//!
//! pusher-js sends `socket_id=…&channel_name=…`; the `pusher-js-auth` batch plugin sends
//! `&socket_id=…&channel_name[0]=…&channel_name[1]=…` (a leading `&`, literal brackets,
//! indices from 0), which serde-based form extractors cannot read. A JSON body may carry the
//! same names, with `channel_name` as an array for a batch. Values that are not strings are
//! ignored, as a form could not have sent them.

use serde_json::Value;

/// The fields of a request, in the order they came.
#[derive(Debug, Default)]
pub struct Fields {
    pairs: Vec<(String, String)>,
}

/// Why a body could not be read as fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("the body is not valid JSON")]
    NotJson,
    #[error("the body must be a JSON object")]
    NotObject,
}

/// Whether a `Content-Type` names JSON.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|v| v.starts_with("application/json"))
}

impl Fields {
    /// Key/value pairs of a query string or form body; `+` and `%xx` decoded.
    pub fn from_form(input: &[u8]) -> Fields {
        Fields {
            pairs: url::form_urlencoded::parse(input).into_owned().collect(),
        }
    }

    /// A body: JSON when `content_type` says so, a form otherwise. In JSON, an array of
    /// strings under `key` reads as `key[0]`, `key[1]`, … like the plugin's form.
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Fields, FieldsError> {
        if !is_json(content_type) {
            return Ok(Fields::from_form(body));
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| FieldsError::NotJson)?;
        let Value::Object(object) = value else {
            return Err(FieldsError::NotObject);
        };
        let mut pairs = Vec::with_capacity(object.len());
        for (key, value) in object {
            match value {
                Value::String(text) => pairs.push((key, text)),
                Value::Array(items) => {
                    for (index, item) in items.into_iter().enumerate() {
                        if let Value::String(text) = item {
                            pairs.push((format!("{key}[{index}]"), text));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Fields { pairs })
    }

    /// The first value of `key`.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of any of `keys`, in the order they came.
    pub fn any_of<'a>(&'a self, keys: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    }

    /// The values of `key[i]`, in index order.
    pub fn indexed(&self, key: &str) -> Vec<String> {
        let mut indexed: Vec<(usize, &str)> = self
            .pairs
            .iter()
            .filter_map(|(k, v)| {
                let index = k
                    .strip_prefix(key)?
                    .strip_prefix('[')?
                    .strip_suffix(']')?
                    .parse()
                    .ok()?;
                Some((index, v.as_str()))
            })
            .collect();
        indexed.sort_by_key(|(i, _)| *i);
        indexed.into_iter().map(|(_, v)| v.to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plugin_form_with_its_leading_ampersand() {
        let fields = Fields::from_form(b"&socket_id=1.2&channel_name[1]=b&channel_name[0]=a&x=%2B");
        assert_eq!(fields.first("socket_id"), Some("1.2"));
        assert_eq!(fields.indexed("channel_name"), ["a", "b"]);
        assert_eq!(fields.first("channel_name"), None);
        assert_eq!(fields.first("x"), Some("+"));
    }

    #[test]
    fn reads_json_objects_only() {
        let json = Some("application/json");
        let fields = Fields::from_body(
            json,
            br#"{"socket_id": "1.2", "channel_name": ["a", 3, "b"], "n": 1}"#,
        )
        .unwrap();
        assert_eq!(fields.first("socket_id"), Some("1.2"));
        assert_eq!(fields.indexed("channel_name"), ["a", "b"]);
        assert_eq!(fields.first("n"), None);
        assert_eq!(
            Fields::from_body(json, b"[1]").unwrap_err(),
            FieldsError::NotObject
        );
        assert_eq!(
            Fields::from_body(json, b"{").unwrap_err(),
            FieldsError::NotJson
        );
        let form = Fields::from_body(None, b"socket_id=1.2&socket_id=9.9").unwrap();
        assert_eq!(form.first("socket_id"), Some("1.2"), "first value wins");
        assert_eq!(form.all("socket_id").count(), 2);
    }
}
