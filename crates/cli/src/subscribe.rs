//! `roster subscribe` / `unsubscribe` arguments: a subscription's name and its
//! `PARAM=VALUE` pairs (a repeated parameter is a list of values).

use std::collections::BTreeMap;

use roster_protocol::Subscription;
use serde_json::Value;

/// A `PARAM=VALUE` pair that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not PARAM=VALUE")]
pub struct ParamError(String);

/// The subscription `name` with `pairs`. A value that reads as a JSON number, boolean or
/// list is one; anything else is text (`city=Paris`). A parameter given twice is a list.
pub fn parse(name: &str, pairs: &[String]) -> Result<Subscription, ParamError> {
    let mut params: BTreeMap<String, Value> = BTreeMap::new();
    for pair in pairs {
        let (key, text) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ParamError(pair.clone()))?;
        let value = match serde_json::from_str::<Value>(text) {
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::String(_))) => v,
            _ => Value::String(text.to_owned()),
        };
        match params.get_mut(key) {
            Some(Value::Array(list)) => list.push(value),
            Some(one) => *one = Value::Array(vec![one.take(), value]),
            None => {
                params.insert(key.to_owned(), value);
            }
        }
    }
    Ok(Subscription {
        name: name.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pairs_become_typed_values_and_a_repeated_parameter_a_list() {
        let sub = parse(
            "by_city",
            &["city=Paris".into(), "city=Lyon".into(), "age=5".into()],
        )
        .unwrap();
        assert_eq!(sub.params["city"], json!(["Paris", "Lyon"]));
        assert_eq!(sub.params["age"], json!(5));
        assert!(parse("by_city", &["nothing".into()]).is_err());
    }
}
