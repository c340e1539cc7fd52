// The real Azure Mobile Apps backend (`azure-mobile-apps` 4.0.2 on express, its sqlite
// data provider), as the counterpart Roster's client syncs with in
// tests/e2e/ama_backend.rs (started by tests/support/ama_js.rs).
//
// Usage: node server.js DB_FILE
// Serves the `person` table of Roster's default schema (crates/protocol/src/schema.rs,
// `Schema::default_person`) with soft delete on a free port of 127.0.0.1 and prints
// `ama-backend listening on http://127.0.0.1:PORT` (roster_testkit::AMA_BACKEND_LISTENING_ON)
// once it accepts requests.
'use strict';

const express = require('express');
const azureMobileApps = require('azure-mobile-apps');

const dbFile = process.argv[2];
if (!dbFile) {
    console.error('usage: node server.js DB_FILE');
    process.exit(2);
}

const app = express();
const mobileApp = azureMobileApps({
    // Quiet: only errors on stderr.
    logging: { level: 'error' },
    data: { provider: 'sqlite', filename: dbFile },
    // The largest page a client may ask for (the default is 1000).
    maxTop: 1000,
    homePage: false,
    swagger: false,
});

mobileApp.tables.add('person', {
    // Fixed columns (no schema change on write); `age` is a number (SQLite REAL).
    dynamicSchema: false,
    softDelete: true,
    columns: {
        name: 'string',
        email: 'string',
        phone: 'string',
        age: 'number',
        city: 'string',
        notes: 'string',
    },
});

app.use(mobileApp);

mobileApp.tables.initialize().then(() => {
    const server = app.listen(0, '127.0.0.1', () => {
        console.log(`ama-backend listening on http://127.0.0.1:${server.address().port}`);
    });
}).catch((error) => {
    console.error('cannot initialise the tables:', error);
    process.exit(1);
});
