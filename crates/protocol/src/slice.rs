//! Partial sync on the wire: the subscriptions a device names in a request (its slice of
//! the data set) and the rows an answer tells it to drop because they left that slice.
//!
//! The filters themselves are declared by the server owner (the server's config); a
//! device only names one and gives its parameters. The server checks the parameters
//! against the columns' types and lengths and binds `:user` itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RowId;

/// Name of the parameter the server binds to the authenticated user's name. A device
/// that sets it is refused ([`crate::ErrorCode::BadSubscription`]).
pub const USER_PARAM: &str = "user";

/// Most subscriptions one request may name.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Most values one parameter's list may hold.
pub const MAX_PARAM_VALUES: usize = 1_000;

/// One subscription of a device: a filter the server declares, by name, with the
/// device's values for its parameters. A parameter's value is one value (equality) or a
/// list of values (any of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// Name of the filter in the server's config (`by_city`).
    pub name: String,
    /// Values of the filter's parameters, by parameter name without the colon.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
}

impl Subscription {
    /// A stable text key of the subscription (name and parameters as compact JSON), the
    /// same for equal subscriptions.
    pub fn key(&self) -> String {
        let params = serde_json::to_string(&self.params).unwrap_or_default();
        format!("{}{params}", self.name)
    }
}

impl std::fmt::Display for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        for (name, value) in &self.params {
            write!(f, " {name}={value}")?;
        }
        Ok(())
    }
}

/// The slice a request syncs. Absent from a request, the device holds the whole data set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SliceRequest {
    /// The device holds exactly the rows matching at least one of these (none: nothing
    /// but its own unpushed rows).
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Only fetch the live rows matching `subscriptions`, from `since` on, without
    /// evictions or tombstones: the first fetch of a newly added subscription, which the
    /// device runs beside its main watermark. Such a request carries no changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

/// A row that changed on the server and no longer matches the request's subscriptions
/// (edited out of the slice, or written by this request outside it): the device drops
/// its copy unless it holds an unpushed edit of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    /// Table of the row.
    pub table: String,
    /// Id of the row.
    pub id: RowId,
    /// The row's version on the server.
    pub version: u64,
}
