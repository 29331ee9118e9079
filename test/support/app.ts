import { Writable } from 'node:stream'
import pgPoolCore, { type PgPoolCoreOptions, type PoolOptions } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { inject } from 'vitest'
import { uniqueName } from './database.js'

export interface TestApp {
  readonly app: FastifyInstance
  /** application_name of the app's connections, unique per app. */
  readonly applicationName: string
  /** Every log line the app wrote, parsed. */
  readonly logs: Record<string, unknown>[]
}

/** A Fastify app with a JSON logger captured in memory, core registered on `url` (plus `core` options). */
export async function coreApp(
  url: string,
  pool: PoolOptions = {},
  server: FastifyServerOptions = {},
  core: Omit<PgPoolCoreOptions, 'connection' | 'pool'> = {},
): Promise<TestApp> {
  const logs: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      callback()
    },
  })
  const applicationName = pool.applicationName ?? uniqueName()
  const app = Fastify({ logger: { level: 'debug', stream }, ...server })
  const pgbouncer = inject('bouncerPort') !== undefined
  await app.register(pgPoolCore, { ...core, connection: url, pool: { pgbouncer, ...pool, applicationName } })
  return { app, applicationName, logs }
}

export interface HttpResult {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** The error `register` (then `ready`) fails with on a new app; throws when it succeeds. */
export async function registerError(register: (app: FastifyInstance) => unknown): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    await register(app)
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
  throw new Error('registered without an error')
}
