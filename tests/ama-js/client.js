// Microsoft's Azure Mobile Apps JS client (azure-mobile-apps-client 2.0.1) as an app
// would use it offline: a SQLite store (the Cordova plugin's stand-in over node's
// sqlite3), a sync table, push with a conflict handler, incremental pull.
//
//     node client.js PHASE URL TOKEN DIR
//
// PHASE `push`: inserts Ann (25) and Bob (40) offline, pushes, pulls.
// PHASE `conflict`: edits Ann's age to 30 and deletes Bob offline (on the versions it
// last pulled), pushes (a 412 is resolved by keeping its own values on the server's
// version), then pulls incrementally.
// Prints one JSON line: the local rows and the conflicts the handler saw.
'use strict';

const [phase, url, token, dir] = process.argv.slice(2);
require('./sqlite-standin').install(dir);
// xhr2 lacks `withCredentials`, which the client checks for before it uses XHR.
global.XMLHttpRequest = class extends require('xhr2') {
    constructor() {
        super();
        this.withCredentials = false;
    }
};
const WindowsAzure = require('azure-mobile-apps-client');

async function main() {
    const client = new WindowsAzure.MobileServiceClient(url);
    client.currentUser = { userId: 'jane', mobileServiceAuthenticationToken: token };
    const store = new WindowsAzure.MobileServiceSqliteStore('ama.db');
    await store.defineTable({
        name: 'person',
        columnDefinitions: {
            id: 'string', name: 'string', age: 'integer', email: 'string', city: 'string',
            version: 'string', createdAt: 'date', updatedAt: 'date', deleted: 'boolean',
        },
    });
    const context = client.getSyncContext();
    const conflicts = [];
    context.pushHandler = {
        onConflict: async (pushError) => {
            const server = pushError.getServerRecord();
            const mine = pushError.getClientRecord();
            conflicts.push({ status: pushError.getError().request.status, action: pushError.getAction(), server, mine });
            // Keep mine: the same values again, on the server's version. (The record
            // comes as a JSON copy: its dates are text again.)
            mine.version = server.version;
            mine.createdAt = new Date(mine.createdAt);
            mine.updatedAt = new Date(mine.updatedAt);
            await pushError.update(mine);
            pushError.isHandled = true;
        },
    };
    await context.initialize(store);
    const table = client.getSyncTable('person');
    if (phase === 'push') {
        await table.insert({ name: 'Ann', age: 25 });
        await table.insert({ name: 'Bob', age: 40 });
    } else if (phase === 'conflict') {
        const rows = await table.read();
        const ann = rows.find((r) => r.name === 'Ann');
        ann.age = 30;
        await table.update(ann);
        await table.del(rows.find((r) => r.name === 'Bob'));
    } else {
        throw new Error('unknown phase ' + phase);
    }
    const unresolved = await context.push();
    await table.pull(null, 'people');
    const rows = (await table.read()).map((r) => ({ id: r.id, name: r.name, age: r.age, version: r.version }));
    rows.sort((a, b) => a.id.localeCompare(b.id));
    console.log(JSON.stringify({ rows, conflicts, unresolved: unresolved.length }));
}

main().then(() => process.exit(0), (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
});
