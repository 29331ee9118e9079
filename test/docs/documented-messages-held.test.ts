// Held (hostile probing, docs truth): each option error message the READMEs quote is what register throws.
import pgPoolBackpressure from '@fastify-pg-pool/backpressure'
import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import Fastify, { type FastifyInstance } from 'fastify'
import { pgPool } from 'fastify-pg-pool'
import { describe, expect, test } from 'vitest'

const url = 'postgres://app@127.0.0.1:1/app'

async function failure(register: (app: FastifyInstance) => unknown): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await register(app)
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
  throw new Error('registered')
}

const core = (app: FastifyInstance) => app.register(pgPoolCore, { connection: url, pool: { lazy: true } })

describe('quoted refusals', () => {
  const cases: [string, (app: FastifyInstance) => unknown, string][] = [
    [
      'health README: pingTimeout 0',
      async (app) => {
        await core(app)
        await app.register(pgPoolHealth, { pingTimeout: 0 })
      },
      'Invalid option health.pingTimeout: expected an integer from 1 to 2147483647, got 0',
    ],
    [
      'health README: pingTimeot',
      async (app) => {
        await core(app)
        await app.register(pgPoolHealth, { pingTimeot: 5 } as never)
      },
      'Invalid option health.pingTimeot: unknown option; did you mean pingTimeout?',
    ],
    [
      'backpressure README: retryStorm.factr',
      async (app) => {
        await core(app)
        await app.register(pgPoolBackpressure, { retryStorm: { factr: 5 } } as never)
      },
      'Invalid option backpressure.retryStorm.factr: unknown option; did you mean factor?',
    ],
    [
      'umbrella README: helth',
      (app) => app.register(pgPool, { connection: url, pool: { lazy: true }, helth: {} } as never),
      'Invalid option helth: unknown option; did you mean health?',
    ],
    [
      'metrics README: maxRoutes suggestion',
      async (app) => {
        await core(app)
        await app.register(pgPoolMetrics, { maxRoute: 5 } as never)
      },
      'did you mean maxRoutes?',
    ],
    [
      'core README: acquireTimout',
      (app) => app.register(pgPoolCore, { connection: url, pool: { lazy: true, acquireTimout: 5 } as never }),
      'did you mean acquireTimeout?',
    ],
    [
      'umbrella README: connectionString → connection',
      (app) => app.register(pgPool, { connectionString: url } as never),
      'connection',
    ],
    [
      'umbrella README: poolSize → pool.max',
      (app) => app.register(pgPool, { connection: url, pool: { lazy: true }, poolSize: 5 } as never),
      'pool.max',
    ],
  ]
  for (const [label, register, message] of cases) {
    test(label, async () => {
      const error = await failure(register)
      expect(error.code).toBe('FST_PG_POOL_INVALID_OPTION')
      expect(error.message).toContain(message)
    })
  }
})
