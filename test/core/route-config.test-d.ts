import type { RouteDbConfig } from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expectTypeOf, test } from 'vitest'

// Issue 17, item 8: a misspelled `config.db` key must fail the TypeScript build. Fastify infers a
// route's config type from the literal and intersects it with FastifyContextConfig, so every
// key of the literal is "known" and excess property checks never fire: only a required key in
// each object form of RouteDbConfig turns a lone typo into an error. Each `@ts-expect-error`
// below fails (as an unused directive) while a typo compiles.
// Out of reach of any declaration of ours: a typo beside a valid key (`{ transaction: true,
// pipline: true }`) still compiles; the core refuses it when the route is added.

const handler = async () => null

describe('config.db', () => {
  test('a typo fails in app.get(path, { config }, handler)', () => {
    const app = Fastify()
    // @ts-expect-error transacton is not a config.db option
    app.get('/a', { config: { db: { transacton: true } } }, handler)
    // @ts-expect-error pipline is not a config.db option
    app.get('/b', { config: { db: { pipline: true } } }, handler)
    // @ts-expect-error isolaton is not a transaction option
    app.get('/c', { config: { db: { transaction: { isolaton: 'serializable' } } } }, handler)
    // @ts-expect-error a pipelined route cannot be a transaction
    app.get('/d', { config: { db: { transaction: true, pipeline: true } } }, handler)
  })

  test('a typo fails in app.get(path, { config, handler }) and app.route({ ... })', () => {
    const app = Fastify()
    // @ts-expect-error transacton is not a config.db option
    app.get('/a', { config: { db: { transacton: true } }, handler })
    // @ts-expect-error pipline is not a config.db option
    app.route({ method: 'GET', url: '/b', config: { db: { pipline: true } }, handler })
    // @ts-expect-error transacton is not a config.db option
    app.route({ method: 'POST', url: '/c', config: { db: { transacton: { readOnly: true } } }, handler })
  })

  test('valid forms compile', () => {
    const app = Fastify()
    app.get('/tx', { config: { db: { transaction: true } } }, handler)
    app.get('/iso', { config: { db: { transaction: { isolation: 'serializable', readOnly: true } } } }, handler)
    app.get('/shared', { config: { db: { pipeline: true } } }, handler)
    app.get('/plain', { config: { db: { pipeline: false } } }, handler)
    app.get('/none', { config: { db: false } }, handler)
    app.route({ method: 'POST', url: '/r', config: { db: { transaction: true } }, handler })
    expectTypeOf<false>().toExtend<RouteDbConfig>()
    expectTypeOf<{ transaction: true }>().toExtend<RouteDbConfig>()
    expectTypeOf<{ pipeline: true }>().toExtend<RouteDbConfig>()
  })
})
