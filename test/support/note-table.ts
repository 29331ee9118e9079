import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest'
import type { TestApp } from './app.js'
import { createTestDatabase, type TestDatabase } from './database.js'

/** What a test file built on a `note` table of its own database holds (noteTable). */
export interface NoteTable {
  /** The file's own database. */
  readonly db: TestDatabase
  /** The test's app, closed after the test. */
  current: TestApp | undefined
  /** Run after the test, before the app closes (clients, servers of the test's own). */
  readonly closers: (() => Promise<unknown>)[]
  /** The bodies in `note`, in order. */
  notes(): Promise<string[]>
}

/**
 * The setup of the tests whose subject is what a request wrote: a database of the file's own with
 * a `note (body text)` table (a primary key with `primaryKey`), emptied before each test; after
 * each, the closers run and the test's app closes.
 */
export function noteTable(options: { primaryKey?: boolean } = {}): NoteTable {
  let db: TestDatabase | undefined
  const fixture: NoteTable = {
    get db() {
      return db as TestDatabase
    },
    current: undefined,
    closers: [],
    notes: async () =>
      (await (db as TestDatabase).sql<{ body: string }[]>`select body from note order by body`).map((r) => r.body),
  }
  beforeAll(async () => {
    db = await createTestDatabase()
    await db.sql.unsafe(`create table note (body text ${options.primaryKey === true ? 'primary key' : 'not null'})`)
  })
  beforeEach(async () => {
    await (db as TestDatabase).sql`truncate note`
  })
  afterEach(async () => {
    for (const close of fixture.closers.splice(0)) await close().catch(() => {})
    await fixture.current?.app.close()
    fixture.current = undefined
  })
  afterAll(() => db?.drop())
  return fixture
}
