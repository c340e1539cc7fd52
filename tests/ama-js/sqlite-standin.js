// The part of the Cordova SQLite plugin (cordova-sqlite-storage) that the Azure Mobile
// Apps JS client's MobileServiceSqliteStore uses, over node's sqlite3: openDatabase,
// db.transaction (statements queued by callbacks run in the same transaction, in
// order; an error rolls it back), db.executeSql and db.close. Transactions of one
// database run one at a time, as in the plugin.
'use strict';

const sqlite3 = require('sqlite3');

function resultOf(rows, changes, lastID) {
    return {
        rows: { length: rows.length, item: (i) => rows[i] },
        rowsAffected: changes || 0,
        insertId: lastID,
    };
}

function run(db, sql, params) {
    return new Promise((resolve, reject) => {
        if (/^\s*(select|pragma)/i.test(sql)) {
            db.all(sql, params || [], (err, rows) => (err ? reject(err) : resolve(resultOf(rows, 0))));
        } else {
            db.run(sql, params || [], function (err) {
                return err ? reject(err) : resolve(resultOf([], this.changes, this.lastID));
            });
        }
    });
}

class Database {
    constructor(path, success, error) {
        this.queue = Promise.resolve();
        this.db = new sqlite3.Database(path, (err) => (err ? error && error(err) : success && success()));
    }

    // Runs `work` after every earlier transaction of this database.
    serial(work) {
        const next = this.queue.then(work, work);
        this.queue = next.catch(() => {});
        return next;
    }

    transaction(fn, error, success) {
        this.serial(async () => {
            const pending = [];
            const tx = {
                executeSql: (sql, params, ok, fail) => pending.push({ sql, params, ok, fail }),
            };
            await run(this.db, 'BEGIN');
            try {
                fn(tx);
                while (pending.length > 0) {
                    const statement = pending.shift();
                    let result;
                    try {
                        result = await run(this.db, statement.sql, statement.params);
                    } catch (err) {
                        // As in WebSQL: an error callback returning false recovers.
                        if (statement.fail && statement.fail(tx, err) === false) continue;
                        throw err;
                    }
                    if (statement.ok) statement.ok(tx, result);
                }
                await run(this.db, 'COMMIT');
            } catch (err) {
                await run(this.db, 'ROLLBACK').catch(() => {});
                if (error) error(err);
                return;
            }
            if (success) success();
        });
    }

    executeSql(sql, params, ok, fail) {
        this.serial(() => run(this.db, sql, params).then(
            (result) => ok && ok(result),
            (err) => fail && fail(err),
        ));
    }

    close(ok, fail) {
        this.serial(() => new Promise((resolve) => {
            this.db.close((err) => {
                if (err) { if (fail) fail(err); } else if (ok) ok();
                resolve();
            });
        }));
    }
}

// Installs the stand-in as `window.sqlitePlugin`, and marks the process as Cordova so
// that the client offers its SQLite store. Files are named `dir/NAME`.
exports.install = function (dir) {
    global.window = global;
    global.cordova = { version: 'node-standin' };
    global.sqlitePlugin = {
        openDatabase: (options, success, error) => new Database(require('path').join(dir, options.name), success, error),
    };
};
