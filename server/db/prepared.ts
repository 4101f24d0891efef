import type { DbOrTx } from "./client";

/**
 * A query built once per database (or transaction) object and kept: `build` should end in
 * Drizzle's `.prepare(name)` with `sql.placeholder`s, so that the postgres-js driver sends it as a
 * named prepared statement (planned once per connection) and Drizzle does not rebuild its SQL on
 * every call. For hot paths (every agent heartbeat); elsewhere the plain query builder is fine.
 */
export function preparedPerDb<T>(build: (db: DbOrTx) => T): (db: DbOrTx) => T {
  const cache = new WeakMap<object, T>();
  return (db) => {
    let q = cache.get(db);
    if (q === undefined) {
      q = build(db);
      cache.set(db, q);
    }
    return q;
  };
}
