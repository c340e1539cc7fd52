//! Pushing one pending change to an AMA table, without I/O: the requests it makes and
//! what each answer means.
//!
//! An insert is a POST, an update a PATCH with `If-Match: "<version>"` (the version the
//! edit was based on), a delete a DELETE with `If-Match`. A 412 (stale version, with the
//! server's item), a 409 (the id exists) or a 404 (deleted or gone) is read as the
//! conflict kind Roster's server would name ([`ConflictKind`]), fetching the server's
//! item when the answer lacks it. Then, as Roster's server does: two sides that changed
//! different columns are merged and the merge is pushed on the server's version; else
//! the store's policy decides: server-wins takes the server's row, defer-to-client keeps
//! the edit for a choice (a later "keep mine" is pushed on the server's version), and
//! client-wins pushes the edit again on the server's version (undeleting a soft-deleted
//! row first). A PATCH based on the version of a soft-deleted row (a person chose to keep
//! their row over a delete) undeletes it and writes it, without a new conflict.

use roster_protocol::{
    ChangeOp, Conflict, ConflictKind, ConflictPolicy, Fields, Resolution, ServerRow,
};
use serde_json::Value;

use super::{AmaSettings, Item};
use crate::ClientError;
use crate::round::SentChange;

/// How often one change may meet a new conflict (the server's row changing between the
/// conflict and the push that resolves it) before the round gives up on it.
const MAX_ATTEMPTS: u32 = 3;

/// One request of a change's push.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `POST /tables/{t}` with the row (and its id).
    Insert(Fields),
    /// `PATCH /tables/{t}/{id}` with `If-Match` (none when the version is unknown).
    Update {
        /// The version the write is based on.
        if_match: Option<String>,
        /// The row's values.
        fields: Fields,
    },
    /// `DELETE /tables/{t}/{id}` with `If-Match`.
    Delete {
        /// The version the delete is based on.
        if_match: Option<String>,
    },
    /// `POST /tables/{t}/{id}` with `If-Match`: undelete a soft-deleted row. The body
    /// carries the row's values (Roster's `/tables` keeps none for a deleted row; an AMA
    /// backend restores its own and takes them by the PATCH that follows).
    Undelete {
        /// The tombstone's version.
        if_match: String,
        /// The row's values.
        fields: Fields,
    },
    /// `GET /tables/{t}?$filter=id eq '...'&__includeDeleted=true`: the server's item.
    Fetch,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// 2xx with the written item (a DELETE answered without a body gives `None`).
    Written(Option<Item>),
    /// 412 Precondition Failed, with the server's item when the body held one.
    Stale(Option<Item>),
    /// 409 Conflict (an insert of an existing id).
    Exists,
    /// 404 Not Found (deleted, or never there).
    Missing,
    /// The answer to [`Request::Fetch`]: the server's item, if it has one.
    Fetched(Option<Item>),
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    /// Send this request.
    Send(Request),
    /// The change is settled: acknowledged as written.
    Acked {
        /// The version the server holds now (`None` for a row that is gone).
        version: Option<String>,
    },
    /// The change is settled as a conflict; `outcome_version` is the version string of
    /// the conflict's outcome (or, deferred, of the server's row).
    Conflict {
        /// The conflict as Roster's store records it.
        conflict: Box<Conflict>,
        /// The AMA version of `conflict.outcome`.
        outcome_version: Option<String>,
    },
}

/// A conflict found and being resolved by a push of its own.
#[derive(Debug, Clone)]
struct Found {
    kind: ConflictKind,
    server: Option<Item>,
    resolution: Resolution,
    conflicting: Vec<String>,
}

/// The push of one change.
#[derive(Debug)]
pub(crate) struct ChangePush {
    sent: SentChange,
    /// The AMA version the change is based on (`None` for an insert or when unknown).
    if_match: Option<String>,
    policy: ConflictPolicy,
    /// The request in flight.
    sending: Option<Request>,
    found: Option<Found>,
    attempts: u32,
}

/// Columns where `a` and `b` differ (absent reads as null).
fn changed(fields: &Fields, base: &Fields) -> Vec<String> {
    let mut names: Vec<&String> = fields.keys().chain(base.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| {
            fields.get(*name).unwrap_or(&Value::Null) != base.get(*name).unwrap_or(&Value::Null)
        })
        .cloned()
        .collect()
}

impl ChangePush {
    /// The push of `sent`, based on the AMA version `if_match`, resolving conflicts by
    /// `policy`.
    pub(crate) fn new(sent: SentChange, if_match: Option<String>, policy: ConflictPolicy) -> Self {
        Self {
            sent,
            if_match,
            policy,
            sending: None,
            found: None,
            attempts: 0,
        }
    }

    /// The push of `sent` resolving conflicts by the rule `settings` give its table (its
    /// own, else the standing one).
    pub(crate) fn for_table(
        sent: SentChange,
        if_match: Option<String>,
        settings: &AmaSettings,
    ) -> Self {
        let policy = settings.policy_for(&sent.change.table);
        Self::new(sent, if_match, policy)
    }

    /// The change pushed.
    pub(crate) fn sent(&self) -> &SentChange {
        &self.sent
    }

    /// The local row's values (`None` for a delete).
    fn local(&self) -> Option<&Fields> {
        self.sent.change.fields.as_ref()
    }

    /// The first request.
    pub(crate) fn start(&mut self) -> Request {
        let change = &self.sent.change;
        let request = match change.op {
            ChangeOp::Insert => Request::Insert(self.local().cloned().unwrap_or_default()),
            // Without a known version the write could only be blind: read the server's
            // row and treat it as a conflict.
            _ if self.if_match.is_none() => Request::Fetch,
            ChangeOp::Update => Request::Update {
                if_match: self.if_match.clone(),
                fields: self.local().cloned().unwrap_or_default(),
            },
            ChangeOp::Delete => Request::Delete {
                if_match: self.if_match.clone(),
            },
        };
        self.sending = Some(request.clone());
        request
    }

    fn send(&mut self, request: Request) -> Result<Next, ClientError> {
        self.sending = Some(request.clone());
        Ok(Next::Send(request))
    }

    /// What `answer` (to the request in flight) means.
    pub(crate) fn on(&mut self, answer: Answer) -> Result<Next, ClientError> {
        let sending = self.sending.take().ok_or_else(|| {
            ClientError::Protocol("an answer to an AMA push that sent nothing".into())
        })?;
        match (sending, answer) {
            (Request::Undelete { .. }, Answer::Written(item)) => {
                let if_match = item.map(|i| i.version).or(self.if_match.clone());
                let fields = self.local().cloned().unwrap_or_default();
                self.send(Request::Update { if_match, fields })
            }
            (Request::Undelete { .. }, Answer::Missing) => {
                // Gone for good since it was read: write it anew.
                let fields = self.local().cloned().unwrap_or_default();
                self.send(Request::Insert(fields))
            }
            (_, Answer::Written(item)) => Ok(self.written(item)),
            (Request::Fetch, Answer::Fetched(server)) => self.classify(server),
            (_, Answer::Stale(Some(server))) => self.classify(Some(server)),
            (_, Answer::Stale(None) | Answer::Exists | Answer::Missing) => {
                self.send(Request::Fetch)
            }
            (request, answer) => Err(ClientError::Protocol(format!(
                "the Azure Mobile Apps backend answered {request:?} with {answer:?}"
            ))),
        }
    }

    /// The push's write succeeded.
    fn written(&mut self, item: Option<Item>) -> Next {
        let version = item.as_ref().map(|i| i.version.clone());
        match self.found.take() {
            None => Next::Acked { version },
            Some(found) => Next::Conflict {
                conflict: Box::new(self.conflict(&found, item.as_ref().map(Item::server_row))),
                outcome_version: version,
            },
        }
    }

    fn conflict(&self, found: &Found, outcome: Option<ServerRow>) -> Conflict {
        let change = &self.sent.change;
        Conflict {
            table: change.table.clone(),
            id: change.id,
            kind: found.kind,
            client_row: change.fields.clone(),
            server_row: found.server.as_ref().map(Item::server_row),
            resolution: found.resolution,
            outcome,
            conflicting_fields: found.conflicting.clone(),
        }
    }

    /// Names the conflict with the server's row `server` and resolves it.
    fn classify(&mut self, server: Option<Item>) -> Result<Next, ClientError> {
        let op = self.sent.change.op;
        let live = server.as_ref().filter(|s| !s.deleted);
        // The server already holds this row as sent (an earlier push whose answer was
        // lost): acknowledged, as Roster's server does.
        if self.found.is_none()
            && let (Some(theirs), Some(mine)) = (live, self.local())
            && theirs
                .fields
                .as_ref()
                .is_some_and(|f| changed(f, mine).is_empty())
        {
            return Ok(Next::Acked {
                version: Some(theirs.version.clone()),
            });
        }
        let kind = match (op, &server) {
            (ChangeOp::Insert, Some(s)) if s.deleted => ConflictKind::ClientInsertedDeleted,
            (ChangeOp::Insert, Some(_)) => ConflictKind::ClientInsertedExisting,
            // Gone between the 409 and the read: insert again.
            (ChangeOp::Insert, None) => {
                return self.retry(Request::Insert(self.local().cloned().unwrap_or_default()));
            }
            (ChangeOp::Update, Some(s)) if s.deleted => {
                if self.if_match.as_deref() == Some(s.version.as_str()) && self.found.is_none() {
                    // Based on the tombstone: this device saw the delete and keeps its row.
                    let if_match = s.version.clone();
                    let fields = self.local().cloned().unwrap_or_default();
                    return self.send(Request::Undelete { if_match, fields });
                }
                ConflictKind::ClientUpdatedServerDeleted
            }
            (ChangeOp::Update, Some(_)) => ConflictKind::BothUpdated,
            (ChangeOp::Update, None) => ConflictKind::ClientUpdatedPurged,
            (ChangeOp::Delete, Some(s)) if !s.deleted => ConflictKind::ClientDeletedServerUpdated,
            (ChangeOp::Delete, _) => ConflictKind::BothDeleted,
        };
        self.attempts += 1;
        if self.attempts > MAX_ATTEMPTS {
            return Err(ClientError::Protocol(format!(
                "the {} row {} changed on the Azure Mobile Apps backend each time it was \
                 pushed ({MAX_ATTEMPTS} times); it stays pending for the next sync",
                self.sent.change.table, self.sent.change.id
            )));
        }
        let base = self.sent.change.base_fields.as_ref();
        let local = self.local();
        let (local_changed, server_changed) =
            match (base, local, live.and_then(|s| s.fields.as_ref())) {
                (Some(base), Some(local), Some(theirs)) => {
                    (changed(local, base), changed(theirs, base))
                }
                _ => (Vec::new(), Vec::new()),
            };
        let conflicting: Vec<String> = local_changed
            .iter()
            .filter(|name| server_changed.contains(name))
            .filter(|name| {
                let theirs = live
                    .and_then(|s| s.fields.as_ref())
                    .and_then(|f| f.get(*name));
                local.and_then(|f| f.get(*name)) != theirs
            })
            .cloned()
            .collect();
        let server_version = server.as_ref().map(|s| s.version.clone());
        // Different columns on both sides: merged, as Roster's server does whatever the
        // policy.
        if kind == ConflictKind::BothUpdated && base.is_some() && conflicting.is_empty() {
            let mut merged = live.and_then(|s| s.fields.clone()).unwrap_or_default();
            if let Some(local) = local {
                for name in &local_changed {
                    merged.insert(
                        name.clone(),
                        local.get(name).cloned().unwrap_or(Value::Null),
                    );
                }
            }
            self.found = Some(Found {
                kind,
                server,
                resolution: Resolution::AutoMerged,
                conflicting,
            });
            return self.send(Request::Update {
                if_match: server_version,
                fields: merged,
            });
        }
        let resolution = match (kind, self.policy) {
            (ConflictKind::BothDeleted, _) => Resolution::ServerWins,
            (_, ConflictPolicy::ClientWins) => Resolution::ClientWins,
            (_, ConflictPolicy::DeferToClient) => Resolution::Deferred,
            (_, ConflictPolicy::ServerWins | ConflictPolicy::Merge) => Resolution::ServerWins,
        };
        let found = Found {
            kind,
            server,
            resolution,
            conflicting,
        };
        if resolution != Resolution::ClientWins {
            let outcome = found.server.as_ref().map(Item::server_row);
            let conflict = self.conflict(&found, outcome);
            return Ok(Next::Conflict {
                conflict: Box::new(conflict),
                outcome_version: server_version,
            });
        }
        // Client wins: the change again, on the server's version.
        let request = match (op, &found.server) {
            (ChangeOp::Delete, Some(s)) => Request::Delete {
                if_match: Some(s.version.clone()),
            },
            (ChangeOp::Delete, None) => unreachable_delete()?,
            (_, Some(s)) if s.deleted => Request::Undelete {
                if_match: s.version.clone(),
                fields: self.local().cloned().unwrap_or_default(),
            },
            (_, Some(s)) => Request::Update {
                if_match: Some(s.version.clone()),
                fields: self.local().cloned().unwrap_or_default(),
            },
            (_, None) => Request::Insert(self.local().cloned().unwrap_or_default()),
        };
        self.if_match = server_version;
        self.found = Some(found);
        self.send(request)
    }

    fn retry(&mut self, request: Request) -> Result<Next, ClientError> {
        self.attempts += 1;
        if self.attempts > MAX_ATTEMPTS {
            return Err(ClientError::Protocol(format!(
                "the Azure Mobile Apps backend refused the {} row {} as existing but has \
                 no such row",
                self.sent.change.table, self.sent.change.id
            )));
        }
        self.send(request)
    }
}

/// A delete whose server row is gone is settled as both-deleted before a policy applies.
fn unreachable_delete() -> Result<Request, ClientError> {
    Err(ClientError::Protocol(
        "a delete of a row the server does not have reached the client-wins push".into(),
    ))
}

#[cfg(test)]
mod tests {
    use roster_protocol::{Change, RowId};
    use serde_json::json;

    use super::*;
    use crate::local::test_fixtures::fields;

    fn id() -> RowId {
        RowId::from_u128(7)
    }

    fn sent(op: ChangeOp, row: Option<Value>, base: Option<Value>) -> SentChange {
        SentChange {
            change: Change {
                table: "person".into(),
                id: id(),
                op,
                base_version: base.as_ref().map(|_| 1),
                fields: row.map(fields),
                base_fields: base.map(fields),
                edited_at_ms: None,
            },
            local_rev: 1,
        }
    }

    fn item(version: &str, row: Option<Value>) -> Item {
        Item {
            id: id(),
            version: version.into(),
            updated_at: "2026-11-28T01:00:00.000Z".into(),
            updated_at_nanos: 0,
            deleted: row.is_none(),
            fields: row.map(fields),
        }
    }

    fn jane(age: i64) -> Value {
        json!({"name": "Jane", "age": age})
    }

    fn update(policy: ConflictPolicy) -> ChangePush {
        ChangePush::new(
            sent(ChangeOp::Update, Some(jane(30)), Some(jane(25))),
            Some("v1".into()),
            policy,
        )
    }

    fn conflict_of(next: Next) -> (Conflict, Option<String>) {
        match next {
            Next::Conflict {
                conflict,
                outcome_version,
            } => (*conflict, outcome_version),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    #[test]
    fn an_update_is_a_patch_on_its_version_and_a_200_acks_it() {
        let mut push = update(ConflictPolicy::ServerWins);
        assert_eq!(
            push.start(),
            Request::Update {
                if_match: Some("v1".into()),
                fields: fields(jane(30))
            }
        );
        let next = push
            .on(Answer::Written(Some(item("v2", Some(jane(30))))))
            .unwrap();
        assert_eq!(
            next,
            Next::Acked {
                version: Some("v2".into())
            }
        );
    }

    #[test]
    fn a_412_under_server_wins_takes_the_servers_row_jane() {
        let mut push = update(ConflictPolicy::ServerWins);
        push.start();
        let next = push
            .on(Answer::Stale(Some(item("v2", Some(jane(32))))))
            .unwrap();
        let (conflict, version) = conflict_of(next);
        assert_eq!(conflict.kind, ConflictKind::BothUpdated);
        assert_eq!(conflict.resolution, Resolution::ServerWins);
        assert_eq!(conflict.outcome.unwrap().fields.unwrap()["age"], json!(32));
        assert_eq!(conflict.conflicting_fields, ["age"]);
        assert_eq!(version.as_deref(), Some("v2"));
    }

    #[test]
    fn a_412_under_client_wins_pushes_again_on_the_servers_version() {
        let mut push = update(ConflictPolicy::ClientWins);
        push.start();
        let next = push
            .on(Answer::Stale(Some(item("v2", Some(jane(32))))))
            .unwrap();
        assert_eq!(
            next,
            Next::Send(Request::Update {
                if_match: Some("v2".into()),
                fields: fields(jane(30))
            })
        );
        let (conflict, version) = conflict_of(
            push.on(Answer::Written(Some(item("v3", Some(jane(30))))))
                .unwrap(),
        );
        assert_eq!(
            (conflict.kind, conflict.resolution),
            (ConflictKind::BothUpdated, Resolution::ClientWins)
        );
        assert_eq!(version.as_deref(), Some("v3"));
    }

    #[test]
    fn a_412_deferred_keeps_the_edit_with_the_servers_row_and_version() {
        let mut push = update(ConflictPolicy::DeferToClient);
        push.start();
        let (conflict, version) = conflict_of(
            push.on(Answer::Stale(Some(item("v2", Some(jane(32))))))
                .unwrap(),
        );
        assert_eq!(conflict.resolution, Resolution::Deferred);
        assert_eq!(version.as_deref(), Some("v2"));
    }

    #[test]
    fn a_table_with_its_own_policy_is_resolved_by_it_and_the_others_by_the_standing_one() {
        let settings = AmaSettings {
            policy: ConflictPolicy::ServerWins,
            tables: [("person".to_owned(), ConflictPolicy::DeferToClient)].into(),
        };
        let stale = || Answer::Stale(Some(item("v2", Some(jane(32)))));
        let edit = || sent(ChangeOp::Update, Some(jane(30)), Some(jane(25)));
        let mut person = ChangePush::for_table(edit(), Some("v1".into()), &settings);
        person.start();
        let (conflict, _) = conflict_of(person.on(stale()).unwrap());
        assert_eq!(conflict.resolution, Resolution::Deferred);

        let mut other_table = edit();
        other_table.change.table = "team".into();
        let mut team = ChangePush::for_table(other_table, Some("v1".into()), &settings);
        team.start();
        let (conflict, _) = conflict_of(team.on(stale()).unwrap());
        assert_eq!(conflict.resolution, Resolution::ServerWins);
        assert_eq!(conflict.outcome.unwrap().fields.unwrap()["age"], json!(32));
    }

    #[test]
    fn different_columns_changed_on_both_sides_are_merged_and_pushed() {
        let mut push = update(ConflictPolicy::ServerWins);
        push.start();
        let theirs = json!({"name": "Jane", "age": 25, "city": "Oslo"});
        let next = push
            .on(Answer::Stale(Some(item("v2", Some(theirs)))))
            .unwrap();
        assert_eq!(
            next,
            Next::Send(Request::Update {
                if_match: Some("v2".into()),
                fields: fields(json!({"name": "Jane", "age": 30, "city": "Oslo"}))
            })
        );
        let merged = json!({"name": "Jane", "age": 30, "city": "Oslo"});
        let (conflict, _) = conflict_of(
            push.on(Answer::Written(Some(item("v3", Some(merged)))))
                .unwrap(),
        );
        assert_eq!(conflict.resolution, Resolution::AutoMerged);
    }

    #[test]
    fn a_404_reads_the_server_row_to_name_the_kind() {
        let mut push = update(ConflictPolicy::ServerWins);
        push.start();
        assert_eq!(
            push.on(Answer::Missing).unwrap(),
            Next::Send(Request::Fetch)
        );
        let (conflict, _) = conflict_of(push.on(Answer::Fetched(Some(item("v2", None)))).unwrap());
        assert_eq!(conflict.kind, ConflictKind::ClientUpdatedServerDeleted);
        assert!(conflict.outcome.unwrap().deleted);
        let mut purged = update(ConflictPolicy::ServerWins);
        purged.start();
        purged.on(Answer::Missing).unwrap();
        let (conflict, _) = conflict_of(purged.on(Answer::Fetched(None)).unwrap());
        assert_eq!(conflict.kind, ConflictKind::ClientUpdatedPurged);
    }

    #[test]
    fn keeping_a_row_over_a_seen_delete_undeletes_and_writes_it() {
        // After "keep mine" on a deleted row, the edit is based on the tombstone.
        let mut push = ChangePush::new(
            sent(ChangeOp::Update, Some(jane(30)), Some(jane(25))),
            Some("dead".into()),
            ConflictPolicy::ServerWins,
        );
        push.start();
        push.on(Answer::Missing).unwrap();
        let next = push.on(Answer::Fetched(Some(item("dead", None)))).unwrap();
        assert_eq!(
            next,
            Next::Send(Request::Undelete {
                if_match: "dead".into(),
                fields: fields(jane(30))
            })
        );
        let next = push
            .on(Answer::Written(Some(item("v4", Some(jane(25))))))
            .unwrap();
        assert_eq!(
            next,
            Next::Send(Request::Update {
                if_match: Some("v4".into()),
                fields: fields(jane(30))
            })
        );
        let next = push
            .on(Answer::Written(Some(item("v5", Some(jane(30))))))
            .unwrap();
        assert_eq!(
            next,
            Next::Acked {
                version: Some("v5".into())
            }
        );
    }

    #[test]
    fn inserts_and_deletes_meet_their_kinds() {
        let mut insert = ChangePush::new(
            sent(ChangeOp::Insert, Some(jane(30)), None),
            None,
            ConflictPolicy::ServerWins,
        );
        assert_eq!(insert.start(), Request::Insert(fields(jane(30))));
        assert_eq!(
            insert.on(Answer::Exists).unwrap(),
            Next::Send(Request::Fetch)
        );
        let (conflict, _) = conflict_of(
            insert
                .on(Answer::Fetched(Some(item("v1", Some(jane(25))))))
                .unwrap(),
        );
        assert_eq!(conflict.kind, ConflictKind::ClientInsertedExisting);

        let mut delete = ChangePush::new(
            sent(ChangeOp::Delete, None, Some(jane(25))),
            Some("v1".into()),
            ConflictPolicy::ServerWins,
        );
        assert_eq!(
            delete.start(),
            Request::Delete {
                if_match: Some("v1".into())
            }
        );
        let (conflict, _) = conflict_of(
            delete
                .on(Answer::Stale(Some(item("v2", Some(jane(32))))))
                .unwrap(),
        );
        assert_eq!(conflict.kind, ConflictKind::ClientDeletedServerUpdated);

        let mut both = ChangePush::new(
            sent(ChangeOp::Delete, None, Some(jane(25))),
            Some("v1".into()),
            ConflictPolicy::ClientWins,
        );
        both.start();
        both.on(Answer::Missing).unwrap();
        let (conflict, _) = conflict_of(both.on(Answer::Fetched(Some(item("v2", None)))).unwrap());
        assert_eq!(
            (conflict.kind, conflict.resolution),
            (ConflictKind::BothDeleted, Resolution::ServerWins)
        );
    }

    #[test]
    fn a_412_from_a_server_that_holds_the_row_as_sent_acks_it() {
        let mut push = update(ConflictPolicy::DeferToClient);
        push.start();
        let next = push
            .on(Answer::Stale(Some(item("v2", Some(jane(30))))))
            .unwrap();
        assert_eq!(
            next,
            Next::Acked {
                version: Some("v2".into())
            }
        );
    }

    #[test]
    fn a_row_that_keeps_changing_fails_the_push_after_a_few_attempts() {
        let mut push = update(ConflictPolicy::ClientWins);
        push.start();
        let mut last = Ok(Next::Send(Request::Fetch));
        for n in 0..5 {
            last = push.on(Answer::Stale(Some(item(
                &format!("v{n}"),
                Some(jane(40 + n)),
            ))));
            if last.is_err() {
                break;
            }
        }
        assert!(last.is_err(), "gave up");
    }
}
