import { afterAll, describe, expect, test } from 'vitest'
import { defaultErrorMapping } from '../src/error-mapping.js'
import { ABORT_GRACE_MS, CANCEL_DELAY_MS, Lease, type LeaseContext, type LeaseSettings } from '../src/lease.js'
import type { PoolOptions } from '../src/options.js'
import { createHelpers, type TrackedQuery, trackedQueryClass } from '../src/postgres-adapter.js'
import { RESET_AFTER_OPEN_SQL, RESET_SQL, ROLLBACK_SQL } from '../src/session-reset.js'
import type { PgPoolView } from '../src/types.js'
import { flush } from './fake-clock.js'
import { connectionError, type FakeConnection, result, serverError } from './fake-connection.js'
import { type PoolHarness, poolHarness } from './fake-holder.js'

// A postgres.js client that never connects: it lends its Query class to the tracked queries.
const helpers = createHelpers(undefined, {})
const Query = trackedQueryClass(helpers)
afterAll(() => helpers.end({ timeout: 0 }))

interface LeaseHarness extends PoolHarness {
  lease(settings?: Partial<LeaseSettings>): Lease
  leaks: [Lease, number][]
}

function leaseHarness(options: PoolOptions = {}): LeaseHarness {
  const h = poolHarness({ max: 1, ...options })
  const leaks: [Lease, number][] = []
  const ctx: LeaseContext = {
    pool: h.pool,
    clock: h.clock,
    options: h.pool.options,
    Query,
    surface: {
      statementTimeout: h.pool.options.statementTimeout,
      retryAfter: h.pool.options.retryAfter,
      mapping: defaultErrorMapping,
    },
    view: () => ({}) as PgPoolView,
    onLeak: (lease, heldMs) => leaks.push([lease, heldMs]),
  }
  return { ...h, leaks, lease: (settings) => new Lease(ctx, { route: '/r', ...settings }) }
}

type Outcome = { value: unknown; error?: undefined } | { error: unknown; value?: undefined }

/** Runs a statement of `lease` (as awaiting `request.db\`...\`` does); resolves with how it ended. */
function run(lease: Lease, text: string, options?: object): { query: TrackedQuery; outcome: Promise<Outcome> } {
  const query = lease.query([text], [], options)
  // Awaiting a postgres.js query is what runs it.
  const outcome = query.then(
    (value: unknown): Outcome => ({ value }),
    (error: unknown): Outcome => ({ error }),
  )
  return { query, outcome }
}

/** Settles `promise` into an Outcome (a rejection is not left unhandled). */
function settle(promise: Promise<unknown>): Promise<Outcome> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  )
}

function conn(h: PoolHarness, i = 0): FakeConnection {
  const c = h.factory.connections[i]
  if (c === undefined) throw new Error(`no connection ${i}`)
  return c
}

describe('a lease', () => {
  test('takes nothing from the pool until its first statement; finishing it unused returns nothing', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    await lease.finish('commit')
    expect(h.factory.attempts).toEqual([])
    expect(h.of('release')).toEqual([])
    expect(lease.finished).toBe(true)
  })

  test('leases on its first statement, sends it, and settles it with the answer', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const { outcome } = run(lease, 'select 1 as x')
    await flush()
    expect(h.pool.stats()).toMatchObject({ leased: 1 })
    expect(conn(h).wire).toEqual(['select 1 as x'])
    conn(h).answer(result('SELECT', [{ x: 1 }]))
    expect(await outcome).toEqual({ value: result('SELECT', [{ x: 1 }]) })
    // Still held: the holder may run more.
    expect(h.pool.stats()).toMatchObject({ leased: 1 })
    const second = run(lease, 'select 2')
    await flush()
    conn(h).answer()
    await second.outcome
    expect(h.factory.connections).toHaveLength(1)
  })

  test('finish returns the connection with the session reset queued; statements after it are refused with FST_PG_POOL_RELEASED', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const first = run(lease, 'select 1')
    await flush()
    conn(h).answer()
    await first.outcome
    await lease.finish('commit')
    expect(conn(h).resets).toEqual([RESET_SQL])
    expect(h.pool.stats()).toMatchObject({ leased: 0, idle: 1 })
    expect(h.of('release')).toEqual([[0, '/r']])

    const late = run(lease, 'select 2')
    const { error } = await late.outcome
    expect(error).toMatchObject({ code: 'FST_PG_POOL_RELEASED', statusCode: 500 })
    expect(conn(h).wire).toEqual(['select 1', RESET_SQL])
    // Finishing again changes nothing.
    await lease.finish('commit')
    expect(h.of('release')).toHaveLength(1)
  })

  test('finish waits for the statements in flight; none starts meanwhile', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const first = run(lease, 'select pg_sleep(1)')
    await flush()
    let released = false
    const finishing = lease.finish('commit').then(() => {
      released = true
    })
    const during = run(lease, 'select 2')
    expect((await during.outcome).error).toMatchObject({ code: 'FST_PG_POOL_RELEASED' })
    await h.clock.advanceAsync(1_000)
    expect(released).toBe(false)
    expect(h.pool.stats()).toMatchObject({ leased: 1 })
    conn(h).answer()
    await finishing
    expect(released).toBe(true)
    expect((await first.outcome).value).toBeDefined()
    expect(conn(h).wire).toEqual(['select pg_sleep(1)', RESET_SQL])
  })

  test('a one-shot lease returns its connection as soon as its statement settles', async () => {
    const h = leaseHarness()
    const lease = h.lease({ oneShot: true })
    const { outcome } = run(lease, 'select 1')
    await flush()
    conn(h).answer()
    await outcome
    await flush()
    expect(h.pool.stats()).toMatchObject({ leased: 0, idle: 1 })
    expect(lease.finished).toBe(true)
  })

  test('a refusal of the pool reaches its statements with Retry-After', async () => {
    const h = leaseHarness({ maxWaiting: 0 })
    const holder = h.lease()
    run(holder, 'select 1')
    await flush()
    const refused = run(h.lease(), 'select 1')
    const { error } = await refused.outcome
    expect(error).toMatchObject({ code: 'FST_PG_POOL_QUEUE_FULL', headers: { 'retry-after': '1' } })
  })

  test('aborted while waiting for a connection: leaves the queue, its statements fail with FST_PG_POOL_ABORTED', async () => {
    const h = leaseHarness()
    run(h.lease(), 'select 1')
    await flush()
    const waiting = h.lease()
    const queued = run(waiting, 'select 2')
    await flush()
    expect(h.pool.stats().waiting).toBe(1)
    await waiting.finish('abort')
    expect((await queued.outcome).error).toMatchObject({ code: 'FST_PG_POOL_ABORTED', statusCode: 503 })
    expect(h.pool.stats().waiting).toBe(0)
    expect(h.of('acquireError')).toEqual([['aborted', 0]])
  })
})

describe('a cursor batch after the holder finished', () => {
  // Found by the fresh-clone CI (test/core/pipeline-cursor-aborts, under load): a pipelined cursor
  // whose client hung up while postgres.js fetched its next batch had no callback waiting to stop;
  // the batch then ran the handler's callback and the cursor went on for minutes.
  test('is refused: the cursor is closed (no callback waits for it)', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const { query } = run(lease, 'select 1')
    await flush()
    const finishing = settle(lease.finish('abort'))
    const batch = lease.cursorBatch(query, Promise.resolve(undefined)) as Promise<unknown>
    expect(await settle(batch)).toMatchObject({ error: { code: 'FST_PG_POOL_ABORTED' } })
    conn(h).answer()
    await finishing
  })
})

describe('abort and the cancel rule', () => {
  /** Aborts a lease whose statement still runs once CANCEL_DELAY_MS has passed. */
  async function aborting(h: LeaseHarness) {
    const lease = h.lease()
    const statement = run(lease, 'select pg_sleep(10)')
    await flush()
    const finished = settle(lease.finish('abort'))
    expect(conn(h).cancels).toBe(0)
    await h.clock.advanceAsync(CANCEL_DELAY_MS)
    return { lease, statement, finished }
  }

  test('a statement that ends within CANCEL_DELAY_MS gets no cancel: the connection goes back', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const statement = run(lease, 'select 1')
    await flush()
    const finished = settle(lease.finish('abort'))
    await h.clock.advanceAsync(CANCEL_DELAY_MS - 1)
    conn(h).answer()
    await statement.outcome
    await finished
    await h.clock.advanceAsync(ABORT_GRACE_MS * 2)
    expect(conn(h).cancels).toBe(0)
    expect(conn(h).ends).toEqual([])
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
  })

  test('one cancel request; the connection goes back once the request has ended', async () => {
    const h = leaseHarness()
    const { lease, statement, finished } = await aborting(h)
    expect(conn(h).cancels).toBe(1)
    // Idempotent: the same finish, no second cancel request.
    void settle(lease.finish('abort'))
    void settle(lease.finish('commit'))
    expect(conn(h).cancels).toBe(1)
    expect(conn(h).cancelPending).toBe(true)
    conn(h).fail(serverError('57014', 'canceling statement due to user request'))
    expect((await statement.outcome).error).toMatchObject({ code: 'FST_PG_POOL_ABORTED', statusCode: 503 })
    expect(await finished).toEqual({ value: undefined })
    // The 57014 may be another session's cancel (pg_cancel_backend): the pool's is still on its way.
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 0, leased: 1 })
    expect(conn(h).resets).toEqual([])
    conn(h).cancelAnswered()
    await flush()
    expect(conn(h).ends).toEqual([])
    expect(h.pool.stats()).toMatchObject({ open: 1, idle: 1 })
    expect(conn(h).resets).toEqual([RESET_SQL])
    // The grace timer went with the lease, the cancel's bound with its end: only the sweep is left.
    expect(h.clock.pending).toBe(1)
  })

  test('whatever the statement ends with, the connection waits for the request; not ended within connectTimeout, it is closed', async () => {
    for (const end of [
      (c: FakeConnection) => c.fail(serverError('57014', 'canceling statement due to user request')),
      (c: FakeConnection) => c.fail(serverError('57014', 'canceling statement due to statement timeout')),
      (c: FakeConnection) => c.answer(),
      (c: FakeConnection) => c.fail(serverError('23505', 'duplicate key')),
    ]) {
      const h = leaseHarness()
      const { statement, finished } = await aborting(h)
      end(conn(h))
      await statement.outcome
      await finished
      expect(conn(h).ends).toEqual([])
      expect(h.pool.stats()).toMatchObject({ open: 1, idle: 0, leased: 1 })
      await h.clock.advanceAsync(h.pool.options.connectTimeout - 1)
      expect(conn(h).ends).toEqual([])
      await h.clock.advanceAsync(1)
      expect(conn(h).ends).toEqual([{ reason: 'error', graceSeconds: 1 }])
      expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0, leased: 0 })
      expect(conn(h).resets).toEqual([])
      // Its request ending after that hands nothing back.
      conn(h).cancelAnswered()
      await flush()
      expect(h.pool.stats()).toMatchObject({ open: 0, idle: 0 })
    }
  })

  test('a cancel that never reached the server leaves nothing pending: the connection goes back', async () => {
    const h = leaseHarness()
    const { statement, finished } = await aborting(h)
    conn(h).cancelLost()
    conn(h).answer()
    await statement.outcome
    await finished
    expect(conn(h).ends).toEqual([])
    expect(h.pool.stats()).toMatchObject({ idle: 1 })
  })

  test('a statement the cancel does not stop within ABORT_GRACE_MS has its connection cut', async () => {
    const h = leaseHarness()
    const started = h.clock.now()
    const { statement, finished } = await aborting(h)
    let at = 0
    void finished.then(() => {
      at = h.clock.now() - started
    })
    await h.clock.advanceAsync(ABORT_GRACE_MS - 1)
    expect(conn(h).usable).toBe(true)
    expect(at).toBe(0)
    await h.clock.advanceAsync(1)
    // Cut (no grace), then closed for good when the lease comes back.
    expect(conn(h).ends).toEqual([
      { reason: 'error', graceSeconds: 0 },
      { reason: 'error', graceSeconds: 1 },
    ])
    expect((await statement.outcome).error).toMatchObject({ code: 'FST_PG_POOL_ABORTED' })
    expect(at).toBe(CANCEL_DELAY_MS + ABORT_GRACE_MS)
    expect(h.pool.stats()).toMatchObject({ open: 0, leased: 0 })
  })

  test("the holder's own query.cancel() sends a cancel request for a statement that runs", async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const { query, outcome } = run(lease, 'select pg_sleep(10)')
    await flush()
    query.cancel()
    expect(conn(h).cancels).toBe(1)
    conn(h).fail(serverError('57014', 'canceling statement due to user request'))
    const { error } = await outcome
    // Not aborted by the suite: the server's error, mapped.
    expect(error).toMatchObject({ code: '57014', statusCode: 503 })
    expect(conn(h).cancelPending).toBe(true)
    conn(h).cancelAnswered()
    expect(conn(h).cancelPending).toBe(false)
  })

  test("pipelined statements are never cancelled: the shared connection runs other holders' statements", async () => {
    const h = leaseHarness({ pipelineDepth: 4 })
    const lease = h.lease({ pipelined: true })
    const statement = run(lease, 'select pg_sleep(1)')
    await flush()
    const finished = settle(lease.finish('abort'))
    await h.clock.advanceAsync(ABORT_GRACE_MS * 10)
    expect(conn(h).cancels).toBe(0)
    expect(conn(h).usable).toBe(true)
    conn(h).answer()
    await statement.outcome
    await finished
    expect(h.pool.stats()).toMatchObject({ idle: 1 })
  })
})

describe('route transactions', () => {
  /** A route transaction lease whose BEGIN and one statement were answered. */
  async function inTransaction(h: LeaseHarness) {
    const lease = h.lease({ begin: 'BEGIN' })
    const statement = run(lease, 'insert into t values (1)')
    await flush()
    expect(conn(h).wire).toEqual(['BEGIN', 'insert into t values (1)'])
    conn(h).answer(result('BEGIN'))
    conn(h).answer(result('INSERT'))
    await statement.outcome
    return lease
  }

  test('the block check loses its connection: statements held behind it fail as lost, never written', async () => {
    // Round ten (chaos storm): postgres.js rejects the check inside its own close, before the
    // connection is marked closed; a held statement sent then was written on its null socket (an
    // uncaught TypeError). Failed before the fix (the held statement was written).
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const savepoint = run(lease, 'savepoint a')
    await flush()
    conn(h).answer(result('SAVEPOINT'))
    await savepoint.outcome
    // ROLLBACK TO a reads as ROLLBACK: whether the block is still open is asked.
    const back = run(lease, 'rollback to a')
    await flush()
    conn(h).answer(result('ROLLBACK'))
    await back.outcome
    await flush()
    const written = [...conn(h).wire]
    expect(written.at(-1)).toMatch(/statement_timestamp/)
    const held = run(lease, 'insert into t values (2)')
    await flush()
    expect(conn(h).wire).toEqual(written)
    conn(h).fail(connectionError())
    expect((await held.outcome).error).toMatchObject({ code: 'FST_PG_POOL_CONNECTION_LOST' })
    expect(conn(h).wire).toEqual(written)
  })

  test('COMMIT answered COMMIT: committed, the connection goes back with the plain reset', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const finished = settle(lease.finish('commit'))
    await flush()
    expect(conn(h).wire.at(-1)).toBe('COMMIT')
    conn(h).answer(result('COMMIT'))
    expect(await finished).toEqual({ value: undefined })
    expect(h.of('transaction')).toEqual([['commit']])
    expect(conn(h).resets).toEqual([RESET_SQL])
  })

  test('COMMIT answered ROLLBACK (a statement had failed): FST_PG_POOL_COMMIT_FAILED', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const finished = settle(lease.finish('commit'))
    await flush()
    conn(h).answer(result('ROLLBACK'))
    expect((await finished).error).toMatchObject({
      code: 'FST_PG_POOL_COMMIT_FAILED',
      statusCode: 500,
      message: 'The transaction was not committed (the server rolled back)',
    })
    expect(h.of('transaction')).toEqual([['commit_failed']])
    expect(h.pool.stats()).toMatchObject({ idle: 1 })
  })

  test('COMMIT refused by the server (a deferred constraint): FST_PG_POOL_COMMIT_FAILED with the SQLSTATE', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const finished = settle(lease.finish('commit'))
    await flush()
    conn(h).fail(serverError('23503', 'insert or update violates foreign key constraint'))
    const { error } = await finished
    expect(error).toMatchObject({
      code: 'FST_PG_POOL_COMMIT_FAILED',
      message: 'The transaction was not committed (23503)',
    })
    expect((error as Error).cause).toMatchObject({ code: '23503' })
    expect(h.of('transaction')).toEqual([['commit_failed']])
  })

  test('COMMIT sent and the connection lost: FST_PG_POOL_COMMIT_UNKNOWN (it may have committed); the connection is retired', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const finished = settle(lease.finish('commit'))
    await flush()
    conn(h).fail(connectionError('CONNECTION_CLOSED'))
    const { error } = await finished
    expect(error).toMatchObject({ code: 'FST_PG_POOL_COMMIT_UNKNOWN' })
    // Never a success: a 5xx (its exact status is the errors table's).
    expect((error as { statusCode: number }).statusCode).toBeGreaterThanOrEqual(500)
    expect((error as Error).message).toContain('may have been committed')
    expect(h.of('transaction')).toEqual([['commit_unknown']])
    expect(conn(h).ends).toEqual([{ reason: 'error', graceSeconds: 1 }])
  })

  test('the connection closed by the pool before COMMIT: nothing is sent, FST_PG_POOL_COMMIT_FAILED', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    conn(h).markClosed('error')
    const { error } = await settle(lease.finish('commit'))
    expect(error).toMatchObject({
      code: 'FST_PG_POOL_COMMIT_FAILED',
      message: 'The transaction was not committed (the connection was lost)',
    })
    expect(conn(h).wire).not.toContain('COMMIT')
  })

  test('the connection closed by the server before COMMIT: nothing is sent, a retryable FST_PG_POOL_CONNECTION_LOST', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    conn(h).noteSocketClosed()
    const { error } = await settle(lease.finish('commit'))
    expect(error).toMatchObject({
      code: 'FST_PG_POOL_CONNECTION_LOST',
      statusCode: 503,
      message: 'The database connection was lost (error)',
    })
    expect(h.of('transaction')).toEqual([['commit_failed']])
    expect(conn(h).wire).not.toContain('COMMIT')
  })

  test('rollback: ROLLBACK is the one statement sent after the holder finished', async () => {
    const h = leaseHarness()
    const lease = await inTransaction(h)
    const finished = settle(lease.finish('rollback'))
    const late = run(lease, 'select 1')
    await flush()
    expect(conn(h).wire.slice(2)).toEqual(['ROLLBACK'])
    expect((await late.outcome).error).toMatchObject({ code: 'FST_PG_POOL_RELEASED' })
    conn(h).answer(result('ROLLBACK'))
    expect(await finished).toEqual({ value: undefined })
    expect(h.of('transaction')).toEqual([['rollback']])
    expect(conn(h).resets).toEqual([RESET_SQL])
  })
})

describe('the reset a lease asks for', () => {
  /** Runs statements answered with `tags` (or failing, for an Error) on a lease; returns the reset queued. */
  async function resetAfter(
    options: PoolOptions,
    answers: (unknown | Error)[],
    queryOptions?: object,
    text = 'statement',
  ): Promise<string | undefined> {
    const h = leaseHarness(options)
    const lease = h.lease()
    for (const answer of answers) {
      const { outcome } = run(lease, text, queryOptions)
      await flush()
      if (answer instanceof Error) conn(h).fail(answer)
      else conn(h).answer(answer)
      await outcome
    }
    await lease.finish('commit')
    expect(conn(h).resets.length).toBeLessThanOrEqual(1)
    return conn(h).resets[0]
  }

  test("'always': the full reset after any statement, with ROLLBACK first when a block may be open", async () => {
    expect(await resetAfter({}, [result('SELECT')])).toBe(RESET_SQL)
    expect(await resetAfter({}, [result('SET')])).toBe(RESET_SQL)
    expect(await resetAfter({}, [result('BEGIN'), result('INSERT')])).toBe(RESET_AFTER_OPEN_SQL)
    expect(await resetAfter({}, [result('BEGIN'), result('COMMIT')])).toBe(RESET_AFTER_OPEN_SQL)
    expect(await resetAfter({}, [[result('SELECT'), result('BEGIN')]], { simple: true })).toBe(RESET_AFTER_OPEN_SQL)
    // A failed simple query of several statements does not say which of them ran.
    expect(await resetAfter({}, [serverError('42601')], { simple: true }, 'begin; statement')).toBe(
      RESET_AFTER_OPEN_SQL,
    )
    // One statement alone (no `;` before its end) opened nothing if it failed; its tag tells if not.
    expect(await resetAfter({}, [serverError('42601')], { simple: true }, 'statement;')).toBe(RESET_SQL)
    expect(await resetAfter({}, [result('SELECT')], { simple: true })).toBe(RESET_SQL)
    expect(await resetAfter({}, [result('BEGIN')], { simple: true })).toBe(RESET_AFTER_OPEN_SQL)
    expect(await resetAfter({}, [serverError('42601')])).toBe(RESET_SQL)
  })

  test("'rollback': ROLLBACK only when a block may be open", async () => {
    expect(await resetAfter({ sessionReset: 'rollback' }, [result('SELECT')])).toBeUndefined()
    expect(await resetAfter({ sessionReset: 'rollback' }, [result('BEGIN')])).toBe(ROLLBACK_SQL)
  })

  test("'never' and pgbouncer: nothing but ending a block the holder may have left open", async () => {
    expect(await resetAfter({ sessionReset: 'never' }, [result('SELECT')])).toBeUndefined()
    expect(await resetAfter({ pgbouncer: true }, [result('SELECT')])).toBeUndefined()
    // Round eleven: the next holder's statements would run inside it (behind PgBouncer too, where
    // the block pins the server connection to this client connection).
    expect(await resetAfter({ sessionReset: 'never' }, [result('BEGIN')])).toBe(ROLLBACK_SQL)
    expect(await resetAfter({ pgbouncer: true }, [result('BEGIN')])).toBe(ROLLBACK_SQL)
  })

  test("the baseline onConnect left on the connection is restored inside the reset's transaction", async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const { outcome } = run(lease, 'select 1')
    await flush()
    conn(h).baseline = { statements: 'SET search_path TO app', settings: new Map() }
    conn(h).answer(result('BEGIN'))
    await outcome
    await lease.finish('commit')
    // Before the reset's COMMIT: a failure in it fails the whole reset (and retires the connection).
    const untilCommit = RESET_SQL.slice(0, -'; COMMIT'.length)
    expect(conn(h).resets).toEqual([`ROLLBACK; ${untilCommit}; SET search_path TO app; COMMIT`])
  })

  test('a lease that ran only statements of its own (hold()) owes no reset', async () => {
    const h = leaseHarness()
    const lease = h.lease()
    const held = lease.hold()
    await flush()
    expect(conn(h).wire).toEqual(['SELECT 1'])
    conn(h).answer()
    await held
    await lease.finish('commit')
    expect(conn(h).resets).toEqual([])
  })
})

describe('a failed session reset', () => {
  test("reroutes the next holder's statements to a new connection; the refusal on the old one is ignored", async () => {
    const h = leaseHarness()
    const a = h.lease({ route: '/a' })
    const first = run(a, 'set role admin')
    await flush()
    conn(h).answer(result('SET'))
    await first.outcome
    await a.finish('commit')

    const b = h.lease({ route: '/b' })
    const { outcome } = run(b, 'select secret')
    await flush()
    // Queued behind the reset, in the same write.
    expect(conn(h, 0).wire).toEqual(['set role admin', RESET_SQL, 'select secret'])
    conn(h, 0).failReset()
    await flush()
    // The server refused what was queued behind the failed reset; that answer is not b's any more.
    expect(h.of('resetError')).toHaveLength(1)
    expect(conn(h, 0).ends).toEqual([{ reason: 'error', graceSeconds: 0 }])
    expect(conn(h, 1).wire).toEqual(['select secret'])
    conn(h, 1).answer(result('SELECT', [{ secret: 'b' }]))
    expect(await outcome).toEqual({ value: result('SELECT', [{ secret: 'b' }]) })
    expect(h.pool.stats()).toMatchObject({ open: 1, leased: 1 })
    await b.finish('commit')
    expect(conn(h, 1).resets).toEqual([RESET_SQL])
  })
})

describe('leak warnings', () => {
  test('the pool tells the lease, which tells the plugin with its route', async () => {
    const h = leaseHarness({ leakDetectionThreshold: 400 })
    const lease = h.lease({ route: '/slow' })
    run(lease, 'select 1')
    await flush()
    h.clock.advance(400)
    expect(h.leaks).toEqual([[lease, 400]])
    expect(lease.route).toBe('/slow')
  })
})
