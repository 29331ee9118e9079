import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { runChild } from './listen-kit.js'

// Round nine: Listener#endClient sweeps the ended client only when it was not connected at the
// end. These trials lose the LISTEN connection (pg_terminate_backend, or both sides of the TCP
// connection cut) a few ms before or after the last unlisten or app.close(), or while a listen is
// still opening, or while a second channel's LISTEN is in flight: the child checks
// pg_stat_activity 3 s later (past postgres.js's backoff, at most 2 s here) for its
// `<name>/listen` backends, and must then exit by itself. (56 trials of these, delays -3..8 ms,
// all held on PostgreSQL 15 when this was written.)

let db: TestDatabase
let url: string
beforeAll(async () => {
  db = await createTestDatabase()
  url = db.directUrl
})
afterAll(() => db.drop())

const trials: [string, number][] = [
  ['terminate-close', 0],
  ['terminate-close', -1],
  ['cut-close', 1],
  ['terminate-unlisten', 0],
  ['cut-unlisten', -1],
  ['terminate-opening-close', 1],
  ['cut-opening-close', 0],
  ['terminate-second-close', 0],
]

describe('LISTEN connection lost as it is ended: nothing left behind (held)', () => {
  test('no /listen backend after, the process exits by itself', async () => {
    const outcomes: Record<string, unknown>[] = []
    for (let i = 0; i < trials.length; i += 2) {
      const batch = trials.slice(i, i + 2)
      const results = await Promise.all(batch.map(([scenario, delay]) => runChild(url, scenario, delay)))
      for (const [j, outcome] of results.entries()) {
        outcomes.push({ trial: batch[j], exited: outcome.exited, ...outcome.result })
      }
    }
    const bad = outcomes.filter(
      (o) => o.exited !== true || o.afterClose !== 0 || (o.afterUnlisten !== undefined && o.afterUnlisten !== 0),
    )
    expect(bad, JSON.stringify(outcomes)).toEqual([])
  }, 60_000)
})
