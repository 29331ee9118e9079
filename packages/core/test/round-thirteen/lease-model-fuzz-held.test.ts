// HELD (probe-machines): a seeded fuzzer of Leases on a Pool of fake connections
// (./lease-fuzz.ts): 300 seeds x 200 steps of plain, route-transaction and pipelined leases
// running statements (selects and writes), statements answered, refused by the server (40001,
// 23505, 57014, 25P02) or lost with their connection, resets failing before anything behind them
// was answered (reroute), connections killed under their holders, cancel requests answered, the
// clock past acquireTimeout / statement deadline, finish('commit' | 'rollback' | 'abort') at any
// moment, and the pool closing. Held: every statement settles exactly once, with its own answer
// (never another lease's rows) or a coded error; on each connection, an exclusive lease's
// statements are never interleaved with another lease's (only pipelined ones interleave); a
// route transaction is reported committed (notCommitted() undefined) only when its COMMIT was
// answered; every lease finishes, end() resolves, every connection is closed and counts are 0.
import { afterAll, expect, test } from 'vitest'
import { helpers, leaseFuzz } from './lease-fuzz.js'

afterAll(() => helpers.end({ timeout: 0 }))

test('leases keep their invariants over 300 seeded random runs of 200 steps', async () => {
  const failures: string[] = []
  for (let seed = 1; seed <= 300; seed++) failures.push(...(await leaseFuzz(seed, 200)))
  expect(failures.slice(0, 5)).toEqual([])
}, 60_000)
