import type postgres from 'postgres'
import { describe, expect, test } from 'vitest'
import type { AdapterQuery, ServerClient, TrackedQuery } from '../src/postgres-adapter.js'
import { ServerConnection } from '../src/server-connection.js'
import { type UnderFailedReset, underFailedReset } from '../src/session-reset.js'
import { flush } from './fake-clock.js'
import { serverError } from './fake-connection.js'

/** A ServerClient with no socket: it records what the connection asks of it. */
function fakeClient() {
  const calls = { cancels: 0, sendNow: [] as string[], sent: [] as string[], ends: [] as number[] }
  let failCancel: ((error: unknown) => void) | undefined
  let answerCancel: (() => void) | undefined
  let resetEnd: ((error: unknown) => void) | undefined
  const client: ServerClient = {
    sql: undefined as unknown as postgres.Sql<{}>,
    send: (query: AdapterQuery) => {
      calls.sent.push(query.strings[0] ?? '')
      // The driver could not build it behind another statement (postgres-adapter.ts, assumption 8).
      return query.strings[0] !== 'unbuildable'
    },
    sendNow(text, onEnd) {
      calls.sendNow.push(text)
      resetEnd = onEnd
    },
    cancel() {
      calls.cancels++
      return new Promise((resolve, reject) => {
        answerCancel = resolve
        failCancel = reject
      })
    },
    open: async () => {},
    seedable: true,
    checkSettings: async () => {},
    pid: 42,
    end: async (grace) => {
      calls.ends.push(grace)
    },
  }
  return {
    client,
    calls,
    cancelLost: () => failCancel?.(new Error('ECONNREFUSED')),
    cancelAnswered: () => answerCancel?.(),
    resetFails: (error: unknown) => resetEnd?.(error),
    resetAnswered: () => resetEnd?.(undefined),
  }
}

describe('ServerConnection: the cancel rule', () => {
  test('one cancel request on its way at most; only its end clears it, not how statements end', async () => {
    const { client, calls, cancelAnswered } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.cancel()
    conn.cancel()
    expect(calls.cancels).toBe(1)
    expect(conn.cancelPending).toBe(true)
    let settled = false
    void conn.cancelSettled().then(() => {
      settled = true
    })
    // A 57014 "due to user request" may be another session's cancel (pg_cancel_backend).
    conn.noteEnded(false)
    await flush()
    expect([conn.cancelPending, settled]).toEqual([true, false])
    cancelAnswered()
    await flush()
    expect([conn.cancelPending, settled]).toEqual([false, true])
    conn.cancel()
    expect(calls.cancels).toBe(2)
  })

  test('a cancel request that settles only as postgres.js gives it up (its connect_timeout) retires the connection', async () => {
    // Round ten, second round: postgres.js settles a cancel it gave up on as one the server
    // answered; the request may still be on its way. Answered in time, the connection stays.
    let now = 0
    for (const [settlesAt, usable] of [
      [899, true],
      [900, false],
    ] as const) {
      const { client, cancelAnswered } = fakeClient()
      const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY, 1_000, () => now)
      now = 0
      conn.cancel()
      now = settlesAt
      cancelAnswered()
      await flush()
      expect([conn.cancelPending, conn.usable]).toEqual([false, usable])
    }
  })

  test('a cancel request that never reached the server cannot land later', async () => {
    const { client, cancelLost } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.cancel()
    cancelLost()
    await flush()
    expect(conn.cancelPending).toBe(false)
  })

  test('no cancel on a closed connection', () => {
    const { client, calls } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.markClosed('error')
    conn.cancel()
    expect([calls.cancels, conn.cancelPending]).toEqual([0, false])
  })
})

describe('ServerConnection: the session reset', () => {
  test('is sent at once; a refusal by the server closes the connection and calls back synchronously', () => {
    const { client, calls, resetFails } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    const failures: unknown[] = []
    conn.queueReset('RESET ALL', (error) => failures.push(error))
    expect(calls.sendNow).toEqual(['RESET ALL'])
    const refusal = serverError('25P02')
    resetFails(refusal)
    expect(failures).toEqual([refusal])
    expect([conn.usable, conn.closeReason]).toEqual([false, 'error'])
  })

  test('a lost connection closes it without the callback: nothing proves what ran behind the reset', () => {
    const { client, resetFails } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    const failures: unknown[] = []
    conn.queueReset('RESET ALL', (error) => failures.push(error))
    resetFails(Object.assign(new Error('write CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED' }))
    expect(failures).toEqual([])
    expect(conn.closeReason).toBe('error')
  })

  test('end() marks it closed with the first reason and ends the client once', async () => {
    const { client, calls } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.markClosed('deadline')
    const first = conn.end('error', 0)
    expect(conn.end('shutdown', 5)).toBe(first)
    await first
    expect([conn.closeReason, calls.ends]).toEqual(['deadline', [0]])
  })

  test('a query the driver could not build behind another statement retires the connection', () => {
    const { client, calls } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.send({ strings: ['select 1'], args: [] } as unknown as Parameters<typeof conn.send>[0])
    expect(conn.usable).toBe(true)
    conn.send({ strings: ['unbuildable'], args: [] } as unknown as Parameters<typeof conn.send>[0])
    expect([conn.usable, conn.closeReason, calls.sent]).toEqual([false, 'error', ['select 1', 'unbuildable']])
  })
})

/**
 * A query as the connection sees it, sent by the suite (BEGIN, SET: refused in an aborted
 * transaction), or by a holder with the extended protocol (one statement that may end it) or the
 * simple one (may hold several); and what its rejection was.
 */
function statement(text: string, kind: UnderFailedReset) {
  const query = {
    strings: [text],
    internal: kind === 'refused',
    options: { simple: kind !== 'may-end' },
    rejected: undefined as unknown,
  } as unknown as TrackedQuery & { rejected: unknown }
  query.reject = (error: unknown) => {
    ;(query as { rejected: unknown }).rejected = error
  }
  expect(underFailedReset(query)).toBe(kind)
  return query
}

describe('ServerConnection: what is written behind a reset not answered yet', () => {
  test('without a reset everything is written at once', () => {
    const { client, calls } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.send(statement('rollback; insert', 'may-end-and-continue'))
    conn.send(statement('insert', 'may-end'))
    expect(calls.sent).toEqual(['rollback; insert', 'insert'])
  })

  test("one statement that could end the reset's transaction, then nothing until the answer; the suite's BEGIN and SET pass", () => {
    const { client, calls, resetAnswered } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.queueReset('RESET ALL', () => {})
    conn.send(statement('BEGIN', 'refused'))
    conn.send(statement('a', 'may-end'))
    conn.send(statement('b', 'may-end'))
    conn.send(statement('SET x', 'refused'))
    expect(calls.sent).toEqual(['BEGIN', 'a'])
    resetAnswered()
    expect(calls.sent).toEqual(['BEGIN', 'a', 'b', 'SET x'])
    conn.send(statement('c', 'may-end'))
    expect(calls.sent).toEqual(['BEGIN', 'a', 'b', 'SET x', 'c'])
  })

  test('a message that may hold several statements waits for the answer, even first', () => {
    const { client, calls, resetAnswered } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.queueReset('RESET ALL', () => {})
    conn.send(statement('rollback; insert', 'may-end-and-continue'))
    expect(calls.sent).toEqual([])
    resetAnswered()
    expect(calls.sent).toEqual(['rollback; insert'])
  })

  test('a refused reset: what waited is dropped (its holder sends it elsewhere), never written', () => {
    const { client, calls, resetFails } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    const failures: unknown[] = []
    conn.queueReset('RESET ALL', (error) => failures.push(error))
    const held = statement('b', 'may-end')
    conn.send(statement('a', 'may-end'))
    conn.send(held)
    resetFails(serverError('22012'))
    expect(failures).toHaveLength(1)
    expect(calls.sent).toEqual(['a'])
    expect((held as unknown as { rejected: unknown }).rejected).toBeUndefined()
  })

  test('a lost connection: what waited fails as a lost connection, never written', () => {
    const { client, calls, resetFails } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.queueReset('RESET ALL', () => {})
    const held = statement('rollback; insert', 'may-end-and-continue')
    conn.send(held)
    resetFails(Object.assign(new Error('write CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED' }))
    expect(calls.sent).toEqual([])
    expect((held as unknown as { rejected: { code: string } }).rejected.code).toBe('CONNECTION_CLOSED')
  })

  test('answered on a connection closed meanwhile: what waited fails as a lost connection', () => {
    const { client, calls, resetAnswered } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.queueReset('RESET ALL', () => {})
    const held = statement('x', 'may-end-and-continue')
    conn.send(held)
    conn.markClosed('deadline')
    resetAnswered()
    expect(calls.sent).toEqual([])
    expect((held as unknown as { rejected: { code: string } }).rejected.code).toBe('CONNECTION_CLOSED')
  })
})
