// Round ten of hostile probing, the newest code: readAt (a replica's refused option named where it was
// given), the umbrella's otel key check, connection.ssl values. Attacks that held.
import pgPoolCore from '@fastify-pg-pool/core'
import pgPool from 'fastify-pg-pool'
import { describe, expect, test } from 'vitest'
import { registerError } from '../support/app.js'

const url = 'postgres://app:secret@127.0.0.1:1/app'

async function message(options: Record<string, unknown>, umbrella = false): Promise<string> {
  const error = await registerError((app) =>
    app.register(
      (umbrella ? pgPool : pgPoolCore) as never,
      { connection: url, pool: { lazy: true }, ...options } as never,
    ),
  )
  expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
  return error.message
}

describe('held: a replica option refused is named as given', () => {
  test.each([
    [[{ host: 'h', port: 99999 }], 'Invalid option replicas[0].port: expected a port from 1 to 65535, got 99999'],
    [[{ host: 'h', prot: 5 }], 'Invalid option replicas[0].prot: unknown option; did you mean port?'],
    [
      [{ host: 'h', idle_timeout: 5 }],
      'Invalid option replicas[0].idle_timeout: is managed by the pool; use the pool options',
    ],
    [
      [url, { host: 'h', ssl: 'bogus' }],
      'Invalid option replicas[1].ssl: expected a boolean, tls options or one of disable, allow, prefer, require, verify-ca, verify-full',
    ],
    [
      [`${url}?sslmode=bogus`],
      'Invalid option replicas[0]: sslmode: expected one of disable, allow, prefer, require, verify-ca, verify-full, got "bogus"',
    ],
    [
      ['postgres://u@h:1,h2:0/db'],
      'Invalid option replicas[0]: a host list entry is not host[:port] (port 1 to 65535): "h2:0"',
    ],
    [[5], 'Invalid option replicas[0]: expected a URL string or postgres.js options, got 5'],
    [
      [{ connection: { host: 'h', port: 0 } }],
      'Invalid option replicas[0].connection.port: expected a port from 1 to 65535, got 0',
    ],
    [
      [{ connection: { host: 'h', password: 5 } }],
      'Invalid option replicas[0].connection.password: expected a string or a function returning one (or a promise of one), got a number',
    ],
    [
      [{ connection: url, pool: { maxx: 1 } }],
      'Invalid option replicas[0].pool.maxx: unknown option; did you mean max?',
    ],
    [
      [{ connection: url, pool: { maxPreparedStatements: 1.5 } }],
      'Invalid option replicas[0].pool.maxPreparedStatements: expected an integer >= 0, got 1.5',
    ],
  ])('%j', async (replicas, expected) => {
    expect(await message({ replicas })).toBe(expected)
  })

  test('a password in a refused replica URL is not shown', async () => {
    const text = await message({ replicas: ['postgres://u:hunter2-secret@h:99999/db'] })
    expect(text).toMatch(/^Invalid option replicas\[0\]/)
    expect(text).not.toContain('hunter2')
  })
})

describe("held: the umbrella's otel part", () => {
  test.each([
    [{ traceContex: true }, 'Invalid option otel.traceContex: unknown option; did you mean traceContext?'],
    [{ tracecontext: true }, 'Invalid option otel.tracecontext: unknown option; did you mean traceContext?'],
    [{ traceContext: 'yes' }, 'Invalid option otel.traceContext: expected a boolean, got "yes"'],
    [{ traces: 'yes' }, 'Invalid option otel.traces: expected a boolean, got "yes"'],
    [true, 'Invalid option otel: expected an object or false, got true'],
    [null, 'Invalid option otel: expected an object or false, got null'],
  ])('otel: %j', async (otel, expected) => {
    expect(await message({ otel }, true)).toBe(expected)
  })
})

describe('held: connection.ssl values', () => {
  test.each([['false'], ['true'], [[]], [1]])('ssl: %j is refused', async (ssl) => {
    expect(await message({ connection: { host: 'h', ssl } })).toMatch(/^Invalid option connection\.ssl: /)
  })
})
