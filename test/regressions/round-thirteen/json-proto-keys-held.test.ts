// HELD (probe-options): options read from JSON (a config file, an environment variable holding
// JSON) can carry an own `__proto__` or `constructor` key, which JSON.parse keeps as a plain
// property. At every level the suite reads (the core's top level, `pool`, `connection` options,
// `replica`, a replica entry, `errorMapping`, health, metrics, backpressure through the umbrella)
// such a key is refused with FST_PG_POOL_INVALID_OPTION naming where it was, and nothing it holds
// (here `max: "abc"`, a pool of 1000) is taken.

import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db?.drop())

async function outcome(plugin: 'core' | 'umbrella', json: string): Promise<unknown> {
  const app = Fastify()
  const options = { connection: db.url, ...(JSON.parse(json) as Record<string, unknown>) }
  try {
    if (plugin === 'core') await app.register(pgPoolCore, options as never)
    else await app.register(pgPool, options as never)
    await app.ready()
    return { registered: true, max: app.pgPool.options.max }
  } catch (error) {
    return error
  } finally {
    await app.close()
  }
}

const parsed = new URL('postgres://u@h:5432/d')

const cases: [string, 'core' | 'umbrella', string, string][] = [
  ['top level', 'core', '{"__proto__": {"pool": {"max": 1000}}}', '__proto__'],
  ['pool', 'core', '{"pool": {"lazy": true, "__proto__": {"max": 1000}}}', 'pool.__proto__'],
  ['pool constructor', 'core', '{"pool": {"lazy": true, "constructor": {"max": 1000}}}', 'pool.constructor'],
  [
    'connection options',
    'core',
    `{"connection": {"host": "${parsed.hostname}", "__proto__": {"host": "elsewhere"}}, "pool": {"lazy": true}}`,
    'connection.__proto__',
  ],
  ['replica', 'core', '{"pool": {"lazy": true}, "replica": {"__proto__": {"maxLag": {}}}}', 'replica.__proto__'],
  [
    'replica entry',
    'core',
    '{"pool": {"lazy": true}, "replicas": [{"connection": "postgres://h/d", "__proto__": {"pool": {"max": 1000}}}]}',
    'replicas[0].__proto__',
  ],
  ['errorMapping', 'core', '{"pool": {"lazy": true}, "errorMapping": {"__proto__": 200}}', 'errorMapping.__proto__'],
  ['health', 'umbrella', '{"pool": {"lazy": true}, "health": {"__proto__": {"livePath": "/x"}}}', 'health.__proto__'],
  ['metrics', 'umbrella', '{"pool": {"lazy": true}, "metrics": {"__proto__": {"path": "/x"}}}', 'metrics.__proto__'],
  [
    'backpressure',
    'umbrella',
    '{"pool": {"lazy": true}, "backpressure": {"__proto__": {"target": -1}}}',
    'backpressure.__proto__',
  ],
]

describe('own __proto__ and constructor keys from JSON', () => {
  for (const [label, plugin, json, named] of cases) {
    test(`${label}: refused, named ${named}`, async () => {
      const result = (await outcome(plugin, json)) as { code?: string; message?: string }
      expect(result.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(result.message).toContain(named)
    })
  }
})
