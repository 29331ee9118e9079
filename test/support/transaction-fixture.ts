import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest'
import { coreApp, type TestApp } from './app.js'
import { createTestDatabase, type TestDatabase } from './database.js'

/** A route's `config` for a route transaction. */
export const tx = { config: { db: { transaction: true } } } as const

export interface TransactionFixture {
  /** The file's own database. */
  readonly db: TestDatabase
  /** This test's app: the core alone, `max: 1`, `acquireTimeout: 1000`, closed after the test. */
  readonly current: TestApp
  /** The bodies in `note`, in no set order. */
  notes(): Promise<string[]>
}

/**
 * The setup the route-transaction regressions share: a database of the file's own with a `note`
 * table, emptied before each test, and a new app per test. With `deferred`, also `parent` and
 * `child` tables whose foreign key is checked at COMMIT: `insert into child values (1, 999)` makes
 * the COMMIT fail.
 */
export function transactionFixture(options: { deferred?: boolean } = {}): TransactionFixture {
  let db: TestDatabase | undefined
  let current: TestApp | undefined
  beforeAll(async () => {
    db = await createTestDatabase()
    if (options.deferred === true) {
      await db.sql`create table parent (id int primary key)`
      await db.sql`create table child (id int primary key,
        parent_id int references parent (id) deferrable initially deferred)`
    }
    await db.sql`create table note (body text not null)`
  })
  beforeEach(async () => {
    const tables = options.deferred === true ? 'note, child, parent' : 'note'
    await (db as TestDatabase).sql.unsafe(`truncate ${tables}`)
    current = await coreApp((db as TestDatabase).url, { max: 1, acquireTimeout: 1000 })
  })
  afterEach(() => current?.app.close())
  afterAll(() => db?.drop())
  return {
    get db() {
      return db as TestDatabase
    },
    get current() {
      return current as TestApp
    },
    notes: async () => (await (db as TestDatabase).sql<{ body: string }[]>`select body from note`).map((r) => r.body),
  }
}
