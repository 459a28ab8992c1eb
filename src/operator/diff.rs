//! Whether a live object already holds everything the operator would apply, so that an
//! unchanged group costs reads only and never a write.

use serde_json::Value;

/// True when every field of `desired` has the same value in `live`. Fields the API server or
/// other managers added to `live` do not count; lists must match element by element.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

/// Values the API server drops when stored, so their absence is not a difference.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_added_fields_do_not_count() {
        let desired = json!({"spec": {"replicas": 3, "template": {"containers": [{"name": "a"}]}}});
        let live = json!({"spec": {"replicas": 3, "progressDeadlineSeconds": 600, "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/x"}]}}, "status": {}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn changed_or_missing_fields_count() {
        let desired = json!({"spec": {"replicas": 3, "labels": {"a": "b"}}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 2, "labels": {"a": "b"}}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"replicas": 3}})));
        assert!(!is_subset(&json!({"l": [1, 2]}), &json!({"l": [1]})));
        assert!(is_subset(&json!({"l": [], "m": {}, "n": null}), &json!({})));
        assert!(is_subset(&json!({"x": 1}), &json!({"x": 1.0})));
    }
}
