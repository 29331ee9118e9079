import type { PgPoolBackpressureOptions, RouteBackpressureConfig } from '@fastify-pg-pool/backpressure'
import type {
  ConnectionOptions,
  PgPoolCoreOptions,
  ReplicaOptions,
  RouteDbConfig,
  TransactionOptions,
} from '@fastify-pg-pool/core'
import { describe, expectTypeOf, test } from 'vitest'

// Round nine typed every option `?: T | undefined` (exactOptionalPropertyTypes users may pass a
// value that is undefined, as a config object built from the environment holds), and the runtime
// takes undefined as "not given" everywhere (undefined-options.test.ts). Each test
// below is what the runtime accepts and the type refused before the second round's fix (each was
// a type error: vitest typecheck reported it against the test).

describe('types refuse what the runtime accepts', () => {
  // Before the fix: retryStorm is `{ factor?: number; delay?: number } | false | undefined`
  // (backpressure/src/options.ts:57), retryAfter `{ min?: number; max?: number } | undefined`
  // (:66): the fields inside lack `| undefined`. `{ factor: undefined }` is accepted at register.
  test('backpressure retryStorm and retryAfter fields take undefined', () => {
    expectTypeOf<{ retryStorm: { factor: undefined; delay: number } }>().toExtend<PgPoolBackpressureOptions>()
    expectTypeOf<{ retryAfter: { min: undefined; max: number } }>().toExtend<PgPoolBackpressureOptions>()
  })

  // Before the fix: RouteBackpressureConfig is `false | { priority: Priority }` (options.ts:14): a priority
  // computed as `cond ? 'high' : undefined` is refused by the type; routePriority (options.ts:191)
  // takes it as 'normal' (`const { priority = 'normal' } = route`).
  test('config.backpressure.priority takes undefined (normal), as register does', () => {
    expectTypeOf<{ priority: undefined }>().toExtend<RouteBackpressureConfig>()
  })

  // Before the fix: TransactionOptions (core/src/types.ts:19-23) is `isolation?: IsolationLevel` etc.,
  // without `| undefined`; app.db.transaction(cb, { isolation: undefined }) runs (held test).
  test('transaction options take undefined', () => {
    expectTypeOf<{ isolation: undefined; readOnly: boolean; deferrable: undefined }>().toExtend<TransactionOptions>()
  })

  // Before the fix: RouteDbConfig's object forms (types.ts:96-134): `readOnly?: boolean`, `instance?: string`,
  // `pipeline?: false`; `{ transaction: true, readOnly: undefined }` is served (held test).
  test('route config.db fields take undefined', () => {
    expectTypeOf<{ transaction: true; readOnly: undefined; instance: undefined }>().toExtend<RouteDbConfig>()
  })

  // Before the fix: maxLag is `{ bytes?: number; seconds?: number } | undefined` (options.ts:516),
  // readYourWrites `{ secret: string; header?: string; cookie?: string | false; maxWait?: number }`
  // (options.ts:525-539): the fields inside lack `| undefined`; register takes undefined (held).
  test('replica maxLag and readYourWrites fields take undefined', () => {
    expectTypeOf<{ maxLag: { bytes: undefined; seconds: number } }>().toExtend<ReplicaOptions>()
    expectTypeOf<{
      readYourWrites: { secret: string; header: undefined; cookie: undefined; maxWait: undefined }
    }>().toExtend<ReplicaOptions>()
  })

  // Not health's `logLevel` and `prefix` (nor metrics' `prefix`): Fastify's own RegisterOptions
  // declare them `?: LogLevel` / `?: string`, and a plugin's options type must agree with them.

  // Before the fix: ConnectionOptions is postgres.js's Options minus four keys (core/src/options.ts:501);
  // postgres.js's typings narrow `host` to a string and `port` to a number and lack `sslnegotiation`,
  // `max_pipeline`, `onnotify` and `socket`, which register takes (postgresOptionKeys,
  // options.ts:186-218) and postgres.js honours: host ['127.0.0.1'] with port [5432] connects,
  // sslnegotiation 'direct' is how TLS without the SSLRequest round trip is asked for.
  test('connection options register takes: host and port lists, sslnegotiation, max_pipeline', () => {
    expectTypeOf<{ host: string[]; port: number[] }>().toExtend<ConnectionOptions>()
    // As object literals (excess keys are checked there, as in `register(plugin, { connection: {...} })`).
    const direct: ConnectionOptions = { host: 'db', sslnegotiation: 'direct' }
    const pipelined: ConnectionOptions = { host: 'db', max_pipeline: 10 }
    void [direct, pipelined]
    expectTypeOf<{ connection: { host: string[]; port: number[] } }>().toExtend<PgPoolCoreOptions>()
  })
})
