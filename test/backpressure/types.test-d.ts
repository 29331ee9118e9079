import type { PgPoolBackpressureOptions, RouteBackpressureConfig } from '@fastify-pg-pool/backpressure'
import type { FastifyContextConfig } from 'fastify'
import { describe, expectTypeOf, test } from 'vitest'

describe('backpressure types', () => {
  test('config.backpressure is typed on every route', () => {
    expectTypeOf<FastifyContextConfig['backpressure']>().toEqualTypeOf<RouteBackpressureConfig | undefined>()
    expectTypeOf<{ priority: 'low' }>().toExtend<RouteBackpressureConfig>()
    expectTypeOf<false>().toExtend<RouteBackpressureConfig>()
    expectTypeOf<{ priority: 'urgent' }>().not.toExtend<RouteBackpressureConfig>()
    // Refused at register, and by the type (round nine): a misspelled key, true
    expectTypeOf<{ priorty: 'low' }>().not.toExtend<RouteBackpressureConfig>()
    expectTypeOf<true>().not.toExtend<RouteBackpressureConfig>()
  })

  test('options', () => {
    expectTypeOf<{ target: 20; process: false }>().toExtend<PgPoolBackpressureOptions>()
    expectTypeOf<{ process: { maxEventLoopDelay: 100 } }>().toExtend<PgPoolBackpressureOptions>()
    expectTypeOf<{ target: '20' }>().not.toExtend<PgPoolBackpressureOptions>()
  })
})
