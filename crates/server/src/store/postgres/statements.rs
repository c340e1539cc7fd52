//! Pooled PostgreSQL connections that keep their prepared statements.
//!
//! Every sync request runs the same dozen small statements: the token and data set
//! checks, the counter lock and bump, the replay cache's lookup, insert and trim, the
//! schema version, the announcement. Sent as text, each is parsed and planned again on
//! every request, and the driver's untyped `query` costs a second round trip to describe
//! it. [`Statements`] prepares each once per connection and keeps it for the connection's
//! life: a request then sends only its parameters.
//!
//! Only statements whose plan does not depend on their values belong here (lookups by a
//! key, a fixed-size window): PostgreSQL moves a prepared statement to a generic plan
//! after five executions, and the generic plan of a statement over a value-dependent
//! range or an array of unknown size is far worse than a custom one (docs/BENCHMARKS.md,
//! "PostgreSQL against SQLite"). Those stay typed and unnamed (`query_typed`), planned
//! with their values each time.

use std::collections::HashMap;

use postgres::types::Type;
use postgres::{Client, GenericClient, NoTls, Statement};
use r2d2_postgres::PostgresConnectionManager;

/// The prepared statements of one connection, by their SQL text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// `sql` with parameters of `types`, prepared on `client`'s connection the first time
    /// it is asked for (`client` is that connection, or a transaction on it).
    pub(crate) fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &'static str,
        types: &[Type],
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare_typed(sql, types)?;
        self.0.insert(sql, statement.clone());
        Ok(statement)
    }
}

/// A pooled connection with its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) statements: Statements,
}

/// r2d2's PostgreSQL manager, making [`Conn`]s: a connection's statements are dropped
/// with it, when the pool finds it broken.
#[derive(Debug)]
pub(crate) struct Manager(pub(crate) PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.0.connect()?,
            statements: Statements::default(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}
