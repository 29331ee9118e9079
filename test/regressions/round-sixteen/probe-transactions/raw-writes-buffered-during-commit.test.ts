import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { sleep } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { transactionFixture, tx } from '../../../support/transaction-fixture.js'

// DEFECT (probe-transactions, round sixteen): on a route transaction, a response written on
// `reply.raw` (after `reply.hijack()`: an export piped with `pipeline(source, reply.raw)`) is held
// by the pool until its COMMIT answers (README: "the first write ... waits"), and every held write
// returned `true`: "write more". The source therefore never sees backpressure and is read to its
// end into the process's memory while the COMMIT runs. With a COMMIT that takes a while (a deferred
// constraint trigger, a sync replica), a 64 MB export is buffered whole before its first byte
// leaves; a bigger one takes the process down.
// What a user expects: the backpressure Node gives every response (`write()` returns false past
// its buffer, 'drain' when it may go on), so that a stream waits for the COMMIT instead of piling up.
// Cause: packages/core/src/reply-gate.ts Gate.write() returns true for a held write; nothing emits
// 'drain' once the held writes went through.

const fx = transactionFixture()
failOnProcessErrors()

const CHUNK = 64 * 1024
const CHUNKS = 1024 // 64 MB

test('a raw export piped while the COMMIT runs: the source waits for it, and the whole body arrives after', async () => {
  await fx.db.sql.unsafe(`
    create or replace function slow_check() returns trigger language plpgsql as $$
      begin perform pg_sleep(1); return null; end $$;
    drop table if exists export_log;
    create table export_log (id int);
    create constraint trigger export_log_slow after insert on export_log
      deferrable initially deferred for each row execute function slow_check();`)
  const { app } = fx.current
  let produced = 0
  let whileCommitting = -1
  app.get('/export', tx, async (request, reply) => {
    await request.db`insert into export_log values (1)`
    reply.hijack()
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < CHUNKS; i++) {
          produced += CHUNK
          yield Buffer.alloc(CHUNK, 120)
        }
      })(),
    )
    reply.raw.writeHead(200, { 'content-type': 'application/octet-stream' })
    // The COMMIT runs for a second (its deferred trigger): halfway through, what was read so far.
    setTimeout(() => {
      whileCommitting = produced
    }, 500)
    await pipeline(source, reply.raw)
  })
  const url = await listen(app)
  const res = await fetch(`${url}/export`)
  let received = 0
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) received += chunk.length
  await sleep(0)
  expect({ status: res.status, received }).toEqual({ status: 200, received: CHUNK * CHUNKS })
  const [row] = await fx.db.sql<{ n: number }[]>`select count(*)::int as n from export_log`
  expect(row?.n).toBe(1)
  // Before the fix: 67108864 (all of it, in memory, before the first byte left).
  expect(whileCommitting).toBeGreaterThan(0)
  expect(whileCommitting).toBeLessThan(4 * 1024 * 1024)
})
