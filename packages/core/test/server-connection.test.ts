import type postgres from 'postgres'
import { describe, expect, test } from 'vitest'
import type { AdapterQuery, ServerClient } from '../src/postgres-adapter.js'
import { cancelledByRequest, ServerConnection } from '../src/server-connection.js'
import { flush } from './fake-clock.js'
import { serverError } from './fake-connection.js'

/** A ServerClient with no socket: it records what the connection asks of it. */
function fakeClient() {
  const calls = { cancels: 0, sendNow: [] as string[], ends: [] as number[] }
  let failCancel: ((error: unknown) => void) | undefined
  let resetError: ((error: unknown) => void) | undefined
  const client: ServerClient = {
    sql: undefined as unknown as postgres.Sql<{}>,
    send: (_query: AdapterQuery) => {},
    sendNow(text, onError) {
      calls.sendNow.push(text)
      resetError = onError
    },
    cancel() {
      calls.cancels++
      return new Promise((_, reject) => {
        failCancel = reject
      })
    },
    open: async () => {},
    pid: 42,
    end: async (grace) => {
      calls.ends.push(grace)
    },
  }
  return {
    client,
    calls,
    cancelLost: () => failCancel?.(new Error('ECONNREFUSED')),
    resetFails: (error: unknown) => resetError?.(error),
  }
}

const byRequest = serverError('57014', 'canceling statement due to user request')
const byTimeout = serverError('57014', 'canceling statement due to statement timeout')
const byLockTimeout = serverError('57014', 'canceling statement due to lock timeout')

describe('cancelledByRequest', () => {
  test('a 57014 from a cancel request, not from statement_timeout or lock_timeout', () => {
    expect(cancelledByRequest(byRequest)).toBe(true)
    expect(cancelledByRequest(byTimeout)).toBe(false)
    expect(cancelledByRequest(byLockTimeout)).toBe(false)
    expect(cancelledByRequest(serverError('57P01', 'terminating connection due to administrator command'))).toBe(false)
    expect(cancelledByRequest(undefined)).toBe(false)
  })
})

describe('ServerConnection: the cancel rule', () => {
  test('one cancel request outstanding at most; only a statement ending in 57014 by request proves it consumed', () => {
    const { client, calls } = fakeClient()
    const conn = new ServerConnection(client, 0, Number.POSITIVE_INFINITY)
    conn.cancel()
    conn.cancel()
    expect(calls.cancels).toBe(1)
    expect(conn.cancelPending).toBe(true)
    conn.noteEnded(undefined)
    conn.noteEnded(byTimeout)
    conn.noteEnded(serverError('23505'))
    expect(conn.cancelPending).toBe(true)
    conn.noteEnded(byRequest)
    expect(conn.cancelPending).toBe(false)
    conn.cancel()
    expect(calls.cancels).toBe(2)
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
})
