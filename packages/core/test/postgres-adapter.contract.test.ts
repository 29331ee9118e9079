import { Readable, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitUntil } from '../../../test/support/database.js'
import {
  type AdapterQuery,
  closeConnections,
  commandsOf,
  copyOutEnded,
  createHelpers,
  createServerClient,
  preparedAnew,
  type QueryOwner,
  queryText,
  resultOf,
  type ServerClient,
  type TrackedQuery,
  type TrackedQueryConstructor,
  trackedQueryClass,
  typeArrayMapOf,
} from '../src/postgres-adapter.js'

// The contract of src/postgres-adapter.ts with postgres.js: one describe per assumption of its
// header (1-9, 4b-4g), each test driving the adapter's exports the way the lease and the server
// connection do, against a real PostgreSQL. An upgrade of postgres.js that breaks an assumption
// fails the test named for it. Run on other postgres.js versions by .ci/steps/postgres-versions.mjs.

/** A Lease as a query sees it: every end passes through it. Records what it saw, in order. */
class RecordingOwner implements QueryOwner {
  readonly ends: { value: unknown; error: unknown }[] = []
  readonly batches: unknown[] = []
  /** Replaces what cursorBatch hands back to postgres.js (the lease's abort rejects it). */
  onBatch: ((result: unknown) => unknown) | undefined
  /** Shared with other recorders when a test checks an order across them. */
  constructor(readonly log: string[] = []) {}

  settled(_query: TrackedQuery, value: unknown, error: unknown): unknown {
    this.ends.push({ value, error })
    this.log.push(error === undefined ? 'settled' : 'settled with an error')
    return error === undefined ? undefined : new OwnerError(error)
  }

  cursorBatch(_query: TrackedQuery, result: unknown): unknown {
    this.batches.push(result)
    return this.onBatch === undefined ? result : this.onBatch(result)
  }

  readonly streamErrors: unknown[] = []

  streamError(_query: TrackedQuery, error: Error): Error {
    this.streamErrors.push(error)
    return new OwnerError(error)
  }
}

/** What the owner makes of a failure (the lease maps errors): the caller must see this one. */
class OwnerError extends Error {
  constructor(readonly original: unknown) {
    super(`owner saw ${String((original as { code?: unknown }).code)}`)
  }
}

interface Built {
  readonly query: TrackedQuery
  /** How often postgres.js called the query's handler. */
  readonly runs: () => number
  /** The queries the canceller it was built with was called with. */
  readonly cancelled: AdapterQuery[]
}

const sql = (strings: TemplateStringsArray, ...args: unknown[]) => ({ strings, args })

let db: TestDatabase
let helpers: ReturnType<typeof createHelpers>
let Tracked: TrackedQueryConstructor
const helpersName = uniqueName('fpp-contract-helpers')
const clients: ServerClient[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql`create table items (id int, name text)`
  await db.sql`create type mood as enum ('happy', 'sad', 'say "hi", ok')`
  await db.sql`create table moods (id int, moods mood[])`
  helpers = createHelpers(db.directUrl, { connection: { application_name: helpersName } })
  Tracked = trackedQueryClass(helpers)
})
afterEach(async () => {
  for (const client of clients.splice(0)) await client.end(0)
})
afterAll(async () => {
  await helpers.end({ timeout: 0 })
  await db.drop()
})

/** A tracked query as Lease.query builds one; `send` is what its handler does (the lease's dispatch). */
function track(
  owner: RecordingOwner,
  send: (query: AdapterQuery) => void,
  { strings, args }: { strings: readonly string[]; args: unknown[] },
  options?: object,
): Built {
  let runs = 0
  const cancelled: AdapterQuery[] = []
  const query = new Tracked(
    strings,
    args,
    (q) => {
      runs++
      send(q)
    },
    (q) => {
      cancelled.push(q)
    },
    options,
    owner,
    false,
  )
  return { query, runs: () => runs, cancelled }
}

/** One server connection's client, as connection-factory.ts opens it. */
async function openClient(
  arrayTypes: Record<number, number> | undefined,
  hooks: { onNotice?: (notice: unknown) => void; onClose?: () => void } = {},
  extra: Record<string, unknown> = {},
): Promise<{ client: ServerClient; name: string }> {
  const name = uniqueName('fpp-contract')
  const client = createServerClient({
    url: db.directUrl,
    options: { ...extra, connection: { application_name: name } },
    onNotice: (notice) => {
      hooks.onNotice?.(notice)
      return undefined
    },
    onClose: hooks.onClose ?? (() => {}),
  })
  clients.push(client)
  await client.open(arrayTypes)
  return { client, name }
}

async function rejection(promise: PromiseLike<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}

const codeOf = (error: unknown) => (error as { code?: unknown } | null)?.code
const macrotask = () => new Promise((resolve) => setTimeout(resolve, 20))

describe('1. Query: the constructor of any query, its handler called once when it runs, its settling through resolve/reject', () => {
  test('the class of a built query is a Promise subclass whose constructor takes (strings, args, handler, canceller, options); building runs nothing and connects nowhere', async () => {
    const owner = new RecordingOwner()
    const { query, runs } = track(owner, () => {}, sql`select ${1}::int as one`, { prepare: false })
    expect(query).toBeInstanceOf(Promise)
    expect(query.strings).toEqual(['select ', '::int as one'])
    expect(query.args).toEqual([1])
    expect(query.options).toEqual({ prepare: false })
    expect(query.executed).toBe(false)
    // resolve/reject are assigned in the constructor: the tracked class's setters caught them.
    expect(typeof query.innerResolve).toBe('function')
    expect(typeof query.innerReject).toBe('function')
    // The lease waits on a query without running it (Promise.prototype.then, not query.then).
    Promise.prototype.then.call(query, undefined, () => {})
    await macrotask()
    expect(runs()).toBe(0)
    expect(query.executed).toBe(false)
    // The helpers client never connects: it only lends its Query class and value helpers.
    expect(await db.countConnections(helpersName)).toBe(0)
  })

  test('the handler is called once when the query runs, through then, execute, forEach and cursor', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const send = (q: AdapterQuery) => client.send(q)

    const awaited = track(owner, send, sql`select 1 as n`)
    await awaited.query
    await awaited.query.then((x) => x)
    expect(awaited.runs()).toBe(1)

    const executed = track(owner, send, sql`select 1 as n`)
    ;(executed.query as unknown as { execute(): unknown }).execute()
    await macrotask()
    expect(executed.runs()).toBe(1)
    await executed.query
    expect(executed.runs()).toBe(1)

    const forEach = track(owner, send, sql`select generate_series(1, 3) as n`)
    await (forEach.query as unknown as { forEach(fn: (row: unknown) => void): Promise<unknown> }).forEach(() => {})
    expect(forEach.runs()).toBe(1)

    const cursor = track(owner, send, sql`select generate_series(1, 3) as n`)
    await (cursor.query as unknown as { cursor(rows: number, fn: (rows: unknown) => void): Promise<unknown> }).cursor(
      1,
      () => {},
    )
    expect(cursor.runs()).toBe(1)

    const iterated = track(owner, send, sql`select generate_series(1, 3) as n`)
    const batches: unknown[] = []
    for await (const rows of (iterated.query as unknown as { cursor(rows: number): AsyncIterable<unknown> }).cursor(
      1,
    )) {
      batches.push(rows)
    }
    expect(batches).toHaveLength(3)
    expect(iterated.runs()).toBe(1)
  })

  test('a result settles through the owner, once, before the caller sees it', async () => {
    const { client } = await openClient({})
    const log: string[] = []
    const owner = new RecordingOwner(log)
    const { query } = track(owner, (q) => client.send(q), sql`select ${7}::int as n`)
    const value = await query.then((result) => {
      log.push('caller')
      return result
    })
    expect(log).toEqual(['settled', 'caller'])
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.error).toBeUndefined()
    expect(owner.ends[0]?.value).toBe(value)
    expect(value).toEqual([{ n: 7 }])
  })

  test('an error settles through the owner, and the caller gets what the owner returned', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select 1 / ${0}::int as n`)
    const error = await rejection(query)
    expect(owner.ends).toHaveLength(1)
    expect(codeOf(owner.ends[0]?.error)).toBe('22012')
    expect(error).toBeInstanceOf(OwnerError)
    expect((error as OwnerError).original).toBe(owner.ends[0]?.error)
    expect(query.failure).toBe(error)
  })

  test("query.cancel() calls the canceller the query was built with (the lease's cancelQuery)", async () => {
    const owner = new RecordingOwner()
    const { query, cancelled } = track(owner, () => {}, sql`select 1`)
    query.cancel()
    expect(cancelled).toEqual([query])
  })
})

describe("2. a client's handler and canceller: send(), sendNow(), cancel()", () => {
  test("send() runs a tracked query on that client's own connection", async () => {
    const a = await openClient({})
    const b = await openClient({})
    expect(a.client.pid).toBeGreaterThan(0)
    expect(a.client.pid).not.toBe(b.client.pid)
    for (const { client } of [a, b]) {
      const owner = new RecordingOwner()
      const { query } = track(owner, (q) => client.send(q), sql`select pg_backend_pid() as pid`)
      expect(await query).toEqual([{ pid: client.pid }])
    }
  })

  test('sendNow() runs in order with what is sent next; its onEnd runs once, with its error or none, before the answers sent behind it', async () => {
    const { client } = await openClient({})
    const log: string[] = []
    const owner = new RecordingOwner(log)
    // Not awaited by anyone, sent at once: the next statement sees its effect.
    client.sendNow("set application_name = 'set by sendNow'", (error) => log.push(`sendNow ended: ${codeOf(error)}`))
    const next = track(owner, (q) => client.send(q), sql`select current_setting('application_name') as name`)
    expect(await next.query).toEqual([{ name: 'set by sendNow' }])

    const errors: unknown[] = []
    client.sendNow('select 1 / 0', (error) => {
      errors.push(error)
      log.push(`sendNow ended: ${codeOf(error)}`)
    })
    const behind = track(owner, (q) => client.send(q), sql`select 2 as n`)
    expect(await behind.query).toEqual([{ n: 2 }])
    expect(codeOf(errors[0])).toBe('22012')
    expect(log).toEqual(['sendNow ended: undefined', 'settled', 'sendNow ended: 22012', 'settled'])
  })

  test('cancel() lands on the running statement, which ends with 57014; the connection stays usable', async () => {
    const { client, name } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select pg_sleep(30) as contract_sleep`)
    const failed = rejection(query)
    await waitUntil(async () => (await db.running(name, '%contract_sleep%')) === 1, 'the statement to run')
    await client.cancel()
    const error = await failed
    expect(codeOf(owner.ends[0]?.error)).toBe('57014')
    expect((owner.ends[0]?.error as Error | undefined)?.message).toBe('canceling statement due to user request')
    expect((error as OwnerError).original).toBe(owner.ends[0]?.error)
    const after = track(owner, (q) => client.send(q), sql`select pg_backend_pid() as pid`)
    expect(await after.query).toEqual([{ pid: client.pid }])
  })
})

describe('3. query.string: the text as sent, $n placeholders, once the query was built', () => {
  test('after it ran, queryText() is the built text (identifiers and fragments inlined)', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(
      owner,
      (q) => client.send(q),
      sql`select id from ${helpers('items')} where name = ${'x'} and id > ${0}`,
    )
    // Before it runs only the strings are known: the fallback numbers every value.
    expect((query as unknown as { string?: unknown }).string).toBeUndefined()
    expect(queryText(query)).toBe('select id from $1 where name = $2 and id > $3')
    await query
    expect((query as unknown as { string?: unknown }).string).toBe('select id from "items" where name = $1 and id > $2')
    expect(queryText(query)).toBe('select id from "items" where name = $1 and id > $2')
  })
})

describe('4. results carry command and count; COPY resolves twice', () => {
  test('command tag and row count of INSERT, SELECT, UPDATE, DDL', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const run = async (q: { strings: readonly string[]; args: unknown[] }, options?: object) =>
      resultOf(await track(owner, (x) => client.send(x), q, options).query)
    expect(await run(sql`insert into items select g, 'n' || g from generate_series(1, 3) g`)).toEqual({
      command: 'INSERT',
      count: 3,
    })
    expect(await run(sql`select * from items`)).toEqual({ command: 'SELECT', count: 3 })
    expect(await run(sql`update items set name = name where false`)).toEqual({ command: 'UPDATE', count: 0 })
    expect(await run(sql`delete from items`)).toEqual({ command: 'DELETE', count: 3 })
    expect((await run(sql`create temp table scratch (a int)`)).command).toBe('CREATE TABLE')
    expect(commandsOf(await track(owner, (x) => client.send(x), sql`select 1`).query)).toEqual(['SELECT'])
  })

  test('a simple multi-statement query: one result per row description; the tags of statements without rows overwrite each other', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const simple = async (text: string) => {
      const { query } = track(owner, (x) => client.send(x), { strings: [text], args: [] }, { simple: true })
      const value = await query
      await track(owner, (x) => client.send(x), { strings: ['rollback'], args: [] }, { simple: true }).query
      return commandsOf(value)
    }
    expect(await simple('begin; select 1')).toEqual(['BEGIN', 'SELECT'])
    expect(await simple('select 1; begin')).toEqual(['BEGIN'])
    // The core's TransactionState cannot see this BEGIN: the transaction it opened is left open
    // while commandsOf() says INSERT only (reported; see the adapter's commandsOf()).
    expect(await simple('begin; insert into items values (1)')).toEqual(['INSERT'])
  })

  test('COPY TO STDOUT resolves first with its stream, then through the owner with its result', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`copy (select generate_series(1, 3)) to stdout`)
    const stream = (await (query as unknown as { readable(): Promise<Readable> }).readable()) as Readable
    expect(query.streaming).toBe(true)
    expect(stream).toBeInstanceOf(Readable)
    let text = ''
    for await (const chunk of stream) text += chunk
    expect(text).toBe('1\n2\n3\n')
    await waitUntil(() => owner.ends.length > 0, 'the COPY to end')
    // The stream went to the caller only: the owner saw the end once, with the result.
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.error).toBeUndefined()
    expect(resultOf(owner.ends[0]?.value)).toEqual({ command: 'COPY', count: 3 })
  })

  test('4d. a COPY TO STDOUT that ended with its stream unread and full: copyOutEnded lets the next statement answer', async () => {
    const { client, name } = await openClient({})
    const owner = new RecordingOwner()
    // One row past the stream's 16 KiB buffer: its push pauses postgres.js's socket.
    const { query } = track(owner, (q) => client.send(q), sql`copy (select repeat('x', 30000)) to stdout`)
    const stream = (await (query as unknown as { readable(): Promise<Readable> }).readable()) as Readable
    await waitUntil(async () => (await db.countConnections(name, 'idle')) === 1, 'the COPY to end on the server')
    // postgres.js read CopyDone with the socket paused (the end reached the owner), or has it
    // waiting behind the pause; either way only the stream's read() resumes the socket.
    const unread = copyOutEnded(query)
    expect(unread === undefined || unread === stream).toBe(true)
    await waitUntil(() => owner.ends.length > 0, 'the COPY to end for postgres.js')
    expect(owner.ends[0]?.error).toBeUndefined()
    copyOutEnded(query)
    const next = new RecordingOwner()
    const { query: after } = track(next, (q) => client.send(q), sql`select 1 as one`)
    await after
    expect(next.ends[0]?.error).toBeUndefined()
    // Its rows are still the caller's to read.
    let length = 0
    for await (const chunk of stream) length += (chunk as Buffer).length
    expect(length).toBe(30_001)
  })

  test('COPY FROM STDIN resolves first with its stream, then through the owner with its result', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`copy items (id, name) from stdin`)
    const stream = (await (query as unknown as { writable(): Promise<Writable> }).writable()) as Writable
    expect(stream).toBeInstanceOf(Writable)
    expect(owner.ends).toHaveLength(0)
    stream.write('10\tten\n')
    stream.end('11\televen\n')
    await finished(stream)
    await waitUntil(() => owner.ends.length > 0, 'the COPY to end')
    expect(owner.ends).toHaveLength(1)
    expect(resultOf(owner.ends[0]?.value)).toEqual({ command: 'COPY', count: 2 })
    expect(await db.sql`select id, name from items where id >= 10 order by id`).toEqual([
      { id: 10, name: 'ten' },
      { id: 11, name: 'eleven' },
    ])
    await db.sql`delete from items`
  })

  test('forEach hands rows to its callback and settles through the owner with the count', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select generate_series(1, 3) as n`)
    const rows: unknown[] = []
    const fn = (row: unknown) => {
      rows.push(row)
    }
    const value = await (query as unknown as { forEach(fn: (row: unknown) => void): Promise<unknown> }).forEach(fn)
    // The lease tells a forEach from its field (such a query is never sent again elsewhere);
    // postgres.js calls the adapter's wrapper there (4h), which calls the callback given.
    expect(query.forEachFn).toBeTypeOf('function')
    expect(query.innerForEachFn).toBe(fn)
    expect(rows).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.value).toBe(value)
    expect(resultOf(value)).toEqual({ command: 'SELECT', count: 3 })
  })
})

type CursorQuery = TrackedQuery & {
  cursor(rows: number, fn: (rows: unknown[]) => unknown): Promise<unknown>
  cursor(rows: number): AsyncIterable<unknown[]>
}

describe('4h. a throw while postgres.js reads the answer rejects the query at once; the statement runs on', () => {
  // The statement: 9 rows of 4 kB (past the server's output buffer, so they leave at once), then
  // half a second of work, then a last row.
  const slowTail = sql`select i, repeat('x', 4000) as pad, case when i = 10 then pg_catalog.pg_sleep(0.5) end as pause from generate_series(1, 10) i`

  test('why: postgres.js itself rejects a forEach whose callback threw before the statement ended, and calls it on', async () => {
    const raw = postgres(db.directUrl, { max: 1 })
    try {
      let calls = 0
      const failed = await rejection(
        raw`select i, repeat('x', 4000) as pad, case when i = 10 then pg_catalog.pg_sleep(0.5) end as pause from generate_series(1, 10) i`.forEach(
          () => {
            calls++
            throw new Error('bad row')
          },
        ),
      )
      expect((failed as Error).message).toBe('bad row')
      const atRejection = calls
      await raw`select 1`
      // The statement had rows left: they were handed to the callback after the rejection.
      expect(atRejection).toBeLessThan(10)
      expect(calls).toBe(10)
    } finally {
      await raw.end({ timeout: 0 })
    }
  })

  test('a forEach callback that throws is not called again; the query fails with its error once the statement ended', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), slowTail)
    let calls = 0
    const failed = await rejection(
      (query as unknown as { forEach(fn: (row: unknown) => void): Promise<unknown> }).forEach(() => {
        calls++
        throw new Error('bad row')
      }),
    )
    expect(calls).toBe(1)
    expect(owner.ends).toHaveLength(1)
    expect(String((owner.ends[0]?.error as Error | undefined)?.message)).toBe('bad row')
    expect(codeOf(failed)).toBe(undefined)
    // It ended with its statement: the next one on the connection answers at once.
    const next = track(owner, (q) => client.send(q), sql`select 2 as two`).query
    expect(await next).toEqual([{ two: 2 }])
  })

  test('a type parser that throws: the query fails with its error once the statement ended, not before', async () => {
    // As an app installs one: postgres.js's `types` option (text, the `pad` column, read by a
    // parser that throws).
    const { client } = await openClient(
      {},
      {},
      {
        types: {
          strict: {
            to: 25,
            from: [25],
            serialize: (x: unknown) => String(x),
            parse: () => {
              throw new Error('bad value')
            },
          },
        },
      },
    )
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), slowTail)
    await rejection(query)
    // Settled once its statement ended: nothing of it runs on the server any more.
    expect(
      await db.sql`select count(*)::int as n from pg_stat_activity where query like '%generate_series(1, 10)%' and state = 'active' and pid <> pg_backend_pid()`,
    ).toEqual([{ n: 0 }])
    expect(owner.ends).toHaveLength(1)
    expect(String((owner.ends[0]?.error as Error | undefined)?.message)).toBe('bad value')
    const next = track(owner, (q) => client.send(q), sql`select 2 as two`).query
    expect(await next).toEqual([{ two: 2 }])
  })

  test("a transform that throws an error with a code of its own is the app's too: the query fails once the statement ended", async () => {
    const coded = Object.assign(new Error('invalid row'), { code: 'E_VALIDATION' })
    const { client } = await openClient(
      {},
      {},
      {
        transform: {
          // Not on the client's own statement when it opens (rows by position there).
          row: (row: unknown) => {
            if (typeof row === 'object' && row !== null && 'pad' in row) throw coded
            return row
          },
        },
      },
    )
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), slowTail)
    await rejection(query)
    expect(
      await db.sql`select count(*)::int as n from pg_stat_activity where query like '%generate_series(1, 10)%' and state = 'active' and pid <> pg_backend_pid()`,
    ).toEqual([{ n: 0 }])
    expect(owner.ends[0]?.error).toBe(coded)
  })
})

describe('4e. a COPY TO STDOUT pushes its rows with stream.push(rows) || socket.pause()', () => {
  test('a stream its reader destroyed mid-COPY is read on to its end: the COPY ends and the next statement answers', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    // Far past the stream's buffer: without reading on, postgres.js pauses its socket for good.
    const { query } = track(
      owner,
      (q) => client.send(q),
      sql`copy (select repeat('x', 1000) from generate_series(1, 2000)) to stdout`,
    )
    const stream = (await (query as unknown as { readable(): Promise<Readable> }).readable()) as Readable
    stream.on('error', () => {})
    for await (const _ of stream) break // destroys the stream, as a `break` out of the loop does
    expect(stream.destroyed).toBe(true)
    await waitUntil(() => owner.ends.length > 0, 'the COPY to end for postgres.js')
    expect(owner.ends[0]?.error).toBeUndefined()
    const next = new RecordingOwner()
    const { query: after } = track(next, (q) => client.send(q), sql`select 1 as one`)
    await after
    expect(next.ends[0]?.error).toBeUndefined()
  })
})

describe("4f. postgres.js fails a COPY's stream with stream.destroy(error): the stream's reader sees the owner's error", () => {
  test('COPY FROM STDIN whose backend is terminated: the writable fails with what streamError made of the driver error', async () => {
    const { client, name } = await openClient({})
    const owner = new RecordingOwner()
    // A COPY FROM STDIN on a table of the test database: rows are written until the backend goes.
    await db.sql`create table if not exists contract_copy_in (n int)`
    const copy = track(owner, (q) => client.send(q), sql`copy contract_copy_in (n) from stdin`)
    const writable = (await (copy.query as unknown as { writable(): Promise<Writable> }).writable()) as Writable
    const failed = new Promise<unknown>((resolve) => writable.once('error', resolve))
    writable.write('1\n')
    await waitUntil(async () => (await db.running(name, '%contract_copy_in%')) === 1, 'the COPY to run')
    await db.admin`select pg_terminate_backend(${client.pid})`
    // Writes go on until the stream learns the connection is gone.
    const writer = setInterval(() => writable.writable && writable.write('2\n'), 5)
    try {
      const error = await failed
      expect(error).toBeInstanceOf(OwnerError)
      expect(codeOf(owner.streamErrors[0])).toMatch(/^CONNECTION_|^57P01$|^EPIPE$|^ECONNRESET$/)
    } finally {
      clearInterval(writer)
    }
  })

  test('COPY TO STDOUT whose backend is terminated mid-read: the readable fails with the owner error', async () => {
    const { client, name } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(
      owner,
      (q) => client.send(q),
      sql`copy (select pg_sleep(0.002), repeat('x', 100) as contract_copy_out from generate_series(1, 100000)) to stdout`,
    )
    const readable = (await (query as unknown as { readable(): Promise<Readable> }).readable()) as Readable
    const failed = new Promise<unknown>((resolve) => readable.once('error', resolve))
    readable.resume()
    await waitUntil(async () => (await db.running(name, '%contract_copy_out%')) === 1, 'the COPY to run')
    await db.admin`select pg_terminate_backend(${client.pid})`
    expect(await failed).toBeInstanceOf(OwnerError)
    expect(codeOf(owner.streamErrors[0])).toMatch(/^CONNECTION_|^57P01$/)
  })

  test('4g. COPY FROM STDIN ended by its writer, then refused by the server (a bad row): the writable fails, it does not wait for good', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    await db.sql`create table if not exists contract_copy_in (n int)`
    const copy = track(owner, (q) => client.send(q), sql`copy contract_copy_in (n) from stdin`)
    const writable = (await (copy.query as unknown as { writable(): Promise<Writable> }).writable()) as Writable
    const failed = new Promise<unknown>((resolve) => writable.once('error', resolve))
    writable.end('not a number\n')
    expect(await failed).toBeInstanceOf(OwnerError)
    await waitUntil(() => owner.ends.length > 0, 'the COPY to end for postgres.js')
    expect(codeOf(owner.ends[0]?.error)).toBe('22P02')
  })

  test('a stream destroyed by its reader (no error) does not go through streamError', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`copy (select 1) to stdout`)
    const readable = (await (query as unknown as { readable(): Promise<Readable> }).readable()) as Readable
    readable.destroy()
    expect(owner.streamErrors).toEqual([])
  })
})

describe('4b. cursor batches go through cursorFn; the next is fetched when what it returns settles', () => {
  test("each batch passes through the owner's cursorBatch, and the next batch waits for what it returned", async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select generate_series(1, 5) as n`)
    const seen: unknown[] = []
    let release: (() => void) | undefined
    owner.onBatch = (result) =>
      (result as Promise<unknown>).then(() => {
        if (seen.length === 1) return new Promise<void>((resolve) => (release = resolve))
      })
    // Runs when awaited, as `await db\`...\`.cursor(n, fn)` does.
    const done = (query as CursorQuery)
      .cursor(2, (rows) => {
        seen.push(rows.map((row) => (row as { n: number }).n))
        return Promise.resolve()
      })
      .then((value) => value)
    // The lease reaches the callback through this field (postgres.js assigned it).
    expect(typeof query.innerCursorFn).toBe('function')
    await waitUntil(() => release !== undefined, 'the first batch')
    // A round trip on the server later, the second batch has not been fetched.
    await db.sql`select 1`
    await macrotask()
    expect(seen).toEqual([[1, 2]])
    release?.()
    const value = await done
    expect(seen).toEqual([[1, 2], [3, 4], [5]])
    expect(owner.batches).toHaveLength(3)
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.value).toBe(value)
  })

  test('a rejection of what cursorBatch returned closes the portal (sql.CLOSE) and ends the query with that error; the next statement gets its own rows', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select generate_series(1, 5) as n`)
    const stop = new Error('aborted by the lease')
    owner.onBatch = () => Promise.reject(stop)
    const seen: unknown[] = []
    const error = await rejection(
      (query as CursorQuery).cursor(2, (rows) => {
        seen.push(rows)
        return Promise.resolve()
      }),
    )
    expect(seen).toHaveLength(1)
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.error).toBe(stop)
    expect((error as OwnerError).original).toBe(stop)
    // The adapter answered CLOSE instead of the rejection: postgres.js reset its row counter
    // and closed the portal, so the next statement's rows are its own.
    const next = track(owner, (q) => client.send(q), sql`select 2 as n`)
    expect(await next.query).toEqual([{ n: 2 }])
  })

  test('a callback that throws synchronously ends the query with its error, and the next statement gets its own rows', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select generate_series(1, 5) as n`)
    const thrown = new Error('callback threw')
    const error = await rejection(
      (query as CursorQuery).cursor(2, () => {
        throw thrown
      }),
    )
    expect((error as OwnerError).original).toBe(thrown)
    const next = track(owner, (q) => client.send(q), sql`select 2 as n`)
    expect(await next.query).toEqual([{ n: 2 }])
  })

  test('why: postgres.js itself, when a cursor callback rejects, leaves its row counter past the batch', async () => {
    // Plain postgres.js, no adapter: the next statement's rows land after as many empty slots as
    // the stopped batch had. When this fails, postgres.js has fixed it and the CLOSE is optional.
    const plain = postgres(db.url, { max: 1, onnotice: () => {} })
    try {
      await plain`select generate_series(1, 5) as n`.cursor(2, () => Promise.reject(new Error('stop'))).catch(() => {})
      const rows = await plain`select 2 as n`
      expect(rows).toHaveLength(3)
      expect(rows[0]).toBeUndefined()
    } finally {
      await plain.end({ timeout: 0 })
    }
  })
})

describe('4c. cursor(rows) without a callback: an async iterable; next() answers done once the query is over', () => {
  test('the iterator hands out every batch through the owner, reassigning resolve per batch, and ends through the owner', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select generate_series(1, 5) as n`)
    const firstResolve = query.innerResolve
    const batches: number[][] = []
    for await (const rows of (query as CursorQuery).cursor(2)) batches.push(rows.map((row) => (row as { n: number }).n))
    expect(batches).toEqual([[1, 2], [3, 4], [5]])
    expect(owner.batches).toHaveLength(3)
    expect(query.innerResolve).not.toBe(firstResolve)
    expect(owner.ends).toHaveLength(1)
    expect(owner.ends[0]?.error).toBeUndefined()
  })

  test('a statement failing between two batches ends the loop with the error the owner returned', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(
      owner,
      (q) => client.send(q),
      // Not 1 / 0: the planner would fold it and fail before the first row.
      sql`select 1 / (3 - g) as n from generate_series(1, 5) g`,
    )
    const batches: unknown[] = []
    const error = await rejection(
      (async () => {
        for await (const rows of (query as CursorQuery).cursor(2)) batches.push(rows)
      })(),
    )
    expect(batches).toHaveLength(1)
    expect(error).toBeInstanceOf(OwnerError)
    expect(codeOf((error as OwnerError).original)).toBe('22012')
  })

  test("postgres.js's own iterator answers done after the owner stopped it between two batches; the adapter's throws", async () => {
    const { client } = await openClient({})
    const stop = new Error('aborted by the lease')
    const text = sql`select generate_series(1, 6) as n`

    // postgres.js's iterator, as cursor() returns it: the failure is lost, the loop just ends.
    const rawOwner = new RecordingOwner()
    rawOwner.onBatch = () => Promise.reject(stop)
    const raw = track(rawOwner, (q) => client.send(q), text).query
    const rawCursor = (Object.getPrototypeOf(Tracked.prototype) as { cursor: CursorQuery['cursor'] }).cursor
    const iterator = rawCursor.call(raw, 2)[Symbol.asyncIterator]()
    const first = await iterator.next()
    expect(first.done).toBe(false)
    await waitUntil(() => rawOwner.ends.length > 0, 'the cursor to end')
    expect(rawOwner.ends[0]?.error).toBe(stop)
    expect(await iterator.next()).toEqual({ done: true })

    // The adapter's iterator throws what the owner made of it instead.
    const owner = new RecordingOwner()
    owner.onBatch = () => Promise.reject(stop)
    const { query } = track(owner, (q) => client.send(q), text)
    const batches: unknown[] = []
    const error = await rejection(
      (async () => {
        for await (const rows of (query as CursorQuery).cursor(2)) batches.push(rows)
      })(),
    )
    expect(batches).toHaveLength(1)
    expect((error as OwnerError).original).toBe(stop)
  })
})

describe('5. fetch_types read per connection; parsers, serializers and shared.typeArrayMap hold the type codecs', () => {
  test('with fetch_types turned off after the client was created, postgres.js loads no array types itself', async () => {
    const { client } = await openClient(undefined)
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select '{1,2}'::int[] as a`)
    expect(await query).toEqual([{ a: '{1,2}' }])
    expect(typeArrayMapOf(client.sql)).toEqual({})
  })

  test("array types installed from the server's oids: int[], text[], a custom enum's array, and helpers.array()", async () => {
    const pool = createHelpers(db.directUrl, {})
    try {
      // As plugin.ts does: the helpers' typeArrayMap is the pool's map, filled by the first connection.
      const arrayTypes = typeArrayMapOf(pool)
      const { client } = await openClient(arrayTypes)
      const [mood] = await db.sql<{ oid: number; typarray: number }[]>`
        select oid::int, typarray::int from pg_type where typname = 'mood'`
      expect(arrayTypes[23]).toBe(1007)
      expect(arrayTypes[25]).toBe(1009)
      expect(mood).toBeDefined()
      expect(arrayTypes[mood?.oid ?? 0]).toBe(mood?.typarray)
      expect(typeArrayMapOf(client.sql)).toEqual(arrayTypes)

      const owner = new RecordingOwner()
      const run = (q: { strings: readonly string[]; args: unknown[] }, on: ServerClient = client) =>
        track(owner, (x) => on.send(x), q).query
      expect(await run(sql`select ${[1, 2, 3]}::int[] as a, '{{1,2},{3,4}}'::int[] as b`)).toEqual([
        {
          a: [1, 2, 3],
          b: [
            [1, 2],
            [3, 4],
          ],
        },
      ])
      // No null element: postgres.js's parser (and its copy in the adapter) reads an unquoted NULL as 'NULL'.
      const texts = ['a,b', 'c"d', 'e\\f', '', 'NULL', '{x}', ' x ']
      expect(await run(sql`select ${texts}::text[] as t`)).toEqual([{ t: texts }])
      const moods = ['happy', 'say "hi", ok']
      await run(sql`insert into moods values (1, ${moods})`)
      expect(await run(sql`select moods from moods where id = 1`)).toEqual([{ moods }])
      // helpers.array() types its value from the same map: text[] once the map is filled.
      expect(await run(sql`select pg_typeof(${pool.array(['a', 'b'])})::text as type`)).toEqual([{ type: 'text[]' }])

      // A later connection installs the pool's map without asking the server again.
      const { client: second } = await openClient(arrayTypes)
      expect(await run(sql`select ${['sad']}::mood[] as m`, second)).toEqual([{ m: ['sad'] }])
    } finally {
      await pool.end({ timeout: 0 })
    }
  })
})

describe('6. onnotice receives notices; onclose fires when the connection closes', () => {
  test('a notice raised by a statement reaches onNotice', async () => {
    const notices: unknown[] = []
    const { client } = await openClient({}, { onNotice: (notice) => notices.push(notice) })
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`do $$ begin raise notice 'contract notice %', 42; end $$`)
    await query
    expect(notices).toHaveLength(1)
    expect(notices[0]).toMatchObject({ severity: 'NOTICE', code: '00000', message: 'contract notice 42' })
  })

  test('onClose fires when the backend is terminated, and the running statement fails with a connection error', async () => {
    let closes = 0
    const { client, name } = await openClient({}, { onClose: () => closes++ })
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select pg_sleep(30) as contract_terminated`)
    const failed = rejection(query)
    await waitUntil(async () => (await db.running(name, '%contract_terminated%')) === 1, 'the statement to run')
    expect(closes).toBe(0)
    await db.admin`select pg_terminate_backend(${client.pid})`
    await failed
    await waitUntil(() => closes > 0, 'onClose')
    expect(closes).toBe(1)
    expect(codeOf(owner.ends[0]?.error)).toBe('CONNECTION_CLOSED')
  })

  test('end(0) fails what is pending through the owner at once', async () => {
    const { client, name } = await openClient({})
    const owner = new RecordingOwner()
    const { query } = track(owner, (q) => client.send(q), sql`select pg_sleep(30) as contract_ended`)
    const failed = rejection(query)
    await waitUntil(async () => (await db.running(name, '%contract_ended%')) === 1, 'the statement to run')
    await client.end(0)
    await failed
    expect(codeOf(owner.ends[0]?.error)).toBe('CONNECTION_DESTROYED')
  })
})

describe('8. a query postgres.js cannot build: 3.4.9 fails the active query instead; the adapter gives the failure back', () => {
  test('why: postgres.js 3.4.9 rejects the running query with the build error and leaves the other unanswered (3.4.10 fails the query itself)', async () => {
    const client = postgres(db.url, { max: 1, onnotice: () => {} })
    try {
      await client`select 1` // open: the next statements are pipelined on it
      const running = client`select pg_sleep(0.2) as running`.then(
        () => 'resolved',
        (error: unknown) => codeOf(error),
      )
      await macrotask()
      const unbuildable = client`select 1 where 1 in ${client([1, undefined] as never)}`.then(
        () => 'resolved',
        (error: unknown) => codeOf(error),
      )
      const late = Promise.race([unbuildable, new Promise((resolve) => setTimeout(resolve, 1_000, 'pending'))])
      const outcome = { running: await running, unbuildable: await late }
      expect([
        // 3.4.9: the running query takes the failure; the other is never answered.
        { running: 'UNDEFINED_VALUE', unbuildable: 'pending' },
        // 3.4.10 (fixed there): each its own outcome. The adapter works with both.
        { running: 'resolved', unbuildable: 'UNDEFINED_VALUE' },
      ]).toContainEqual(outcome)
    } finally {
      await client.end({ timeout: 0 })
    }
  })

  test('send() answers false; the query that failed to build gets its error, the running one its own result', async () => {
    const { client } = await openClient({})
    const runningOwner = new RecordingOwner()
    const { query: running } = track(runningOwner, (q) => client.send(q), sql`select pg_sleep(0.2), 1 as running`)
    const ran = running.then((rows) => rows)
    await macrotask()
    let sent: boolean | undefined
    const failedOwner = new RecordingOwner()
    const { query: unbuildable } = track(
      failedOwner,
      (q) => {
        sent = client.send(q)
      },
      sql`select 1 where 1 in ${helpers([1, undefined] as never)}`,
    )
    const failure = rejection(unbuildable)
    expect(codeOf(((await failure) as OwnerError).original)).toBe('UNDEFINED_VALUE')
    // 3.4.9 left the failed query in its queue: the connection must take nothing more (false);
    // 3.4.10 fails it alone and the connection stays usable (true).
    expect(typeof sent).toBe('boolean')
    expect(await ran).toEqual([{ pg_sleep: '', running: 1 }])
    expect(runningOwner.ends).toEqual([{ value: expect.anything(), error: undefined }])
  })

  test('an undefined value or too many parameters at the top level never reach postgres.js: send() answers true', async () => {
    const { client } = await openClient({})
    for (const [strings, args, code] of [
      [['select ', ' as missing'], [undefined], 'UNDEFINED_VALUE'],
      [['select 1'], Array.from({ length: 65_534 }, () => 1), 'MAX_PARAMETERS_EXCEEDED'],
    ] as const) {
      let sent: boolean | undefined
      const owner = new RecordingOwner()
      const { query } = track(
        owner,
        (q) => {
          sent = client.send(q)
        },
        { strings, args: [...args] },
      )
      const failure = (await rejection(query)) as OwnerError
      expect(codeOf(failure.original)).toBe(code)
      expect(sent).toBe(true)
    }
    const after = new RecordingOwner()
    const { query } = track(after, (q) => client.send(q), sql`select 1 as one`)
    expect(await query).toEqual([{ one: 1 }])
  })
})

describe('7. sql.close() ends the connections a client holds, also after its end() resolved', () => {
  // The late connection itself (a reconnect that opens after end()) is driven end to end by
  // test/regressions/listener-close-during-backoff.test.ts.
  test('after end(), a second end() does nothing new and close() still resolves, leaving no backend', async () => {
    const name = uniqueName('contract-close')
    const client = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: name } })
    await client`select 1`
    await client.end({ timeout: 0 })
    const backends = async () =>
      Number((await db.admin`select count(*)::int as n from pg_stat_activity where application_name = ${name}`)[0]?.n)
    await waitUntil(async () => (await backends()) === 0, 'the ended connection to leave')
    // end() keeps its promise: a second one does nothing, whatever the client holds.
    const again = client.end({ timeout: 0 })
    expect(again).toBeInstanceOf(Promise)
    await again
    await closeConnections(client)
    expect(await backends()).toBe(0)
  })

  test('close() ends an open, idle connection', async () => {
    const name = uniqueName('contract-close-open')
    const client = postgres(db.url, { max: 1, onnotice: () => {}, connection: { application_name: name } })
    await client`select 1`
    const backends = async () =>
      Number((await db.admin`select count(*)::int as n from pg_stat_activity where application_name = ${name}`)[0]?.n)
    expect(await backends()).toBe(1)
    await closeConnections(client)
    await waitUntil(async () => (await backends()) === 0, 'the connection to close')
  })
})

describe('9. query.prepare and query.prepared: a named statement added to the connection, and kept there', () => {
  test("a text's first run prepares one (prepare, not prepared, parsed), later runs find it; prepare: false prepares none", async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    // Returns the query in an object: an async function returning the query (a thenable) would
    // hand back its rows.
    const run = async (text: { strings: readonly string[]; args: unknown[] }, options?: object) => {
      const { query } = track(owner, (q) => client.send(q), text, options)
      const rows = (await query) as unknown as { n?: number }[]
      return { query, rows }
    }
    const onSession = async () =>
      (await run(sql`select count(*)::int as n from pg_catalog.pg_prepared_statements`)).rows[0]?.n
    await onSession() // the count's own statement, prepared once
    const before = await onSession()
    const first = await run(sql`select ${1}::int + 1 as two`)
    expect(preparedAnew(first.query)).toBe(true)
    const again = await run(sql`select ${2}::int + 1 as two`)
    expect(preparedAnew(again.query)).toBe(false)
    const plain = await run(sql`select 3 as three`)
    expect(preparedAnew(plain.query)).toBe(true)
    const unprepared = await run(sql`select 4 as four`, { prepare: false })
    expect(preparedAnew(unprepared.query)).toBe(false)
    expect(await onSession()).toBe((before ?? Number.NaN) + 2)
  })

  test('a Parse the server refuses adds nothing (not parsed); a failure after the Parse keeps the statement', async () => {
    const { client } = await openClient({})
    const owner = new RecordingOwner()
    const count = async () => {
      const { query } = track(
        owner,
        (q) => client.send(q),
        sql`select count(*)::int as n from pg_catalog.pg_prepared_statements`,
      )
      return ((await query) as unknown as { n: number }[])[0]?.n ?? Number.NaN
    }
    await count()
    const before = await count()
    for (const text of [sql`select no_such_column from items where id = ${1}`, sql`select no_such_column from items`]) {
      const { query } = track(owner, (q) => client.send(q), text)
      expect(codeOf(((await rejection(query)) as OwnerError).original)).toBe('42703')
      expect(preparedAnew(query)).toBe(false)
    }
    expect(await count()).toBe(before)
    const { query } = track(owner, (q) => client.send(q), sql`select 1 / ${0}::int as boom`)
    expect(codeOf(((await rejection(query)) as OwnerError).original)).toBe('22012')
    expect(preparedAnew(query)).toBe(true)
    expect(await count()).toBe(before + 1)
  })

  test('a query that never ran prepared nothing', async () => {
    const owner = new RecordingOwner()
    const { query } = track(owner, () => {}, sql`select 1`)
    expect(preparedAnew(query)).toBe(false)
  })
})
