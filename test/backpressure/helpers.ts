import pgPoolBackpressure, { type PgPoolBackpressureOptions } from '@fastify-pg-pool/backpressure'
import { channels, type PoolOptions, type RefusalMessage } from '@fastify-pg-pool/core'
import type { FastifyInstance, FastifyRequest, LightMyRequestResponse } from 'fastify'
import { coreApp, type TestApp } from '../support/app.js'

export interface Shed {
  reason: string
  route: string
}

export interface BackpressureApp extends TestApp {
  /** Every refusal published on the refusal channel for this app's pool. */
  readonly shed: Shed[]
  /** Calls `listener` at each refusal of this app's pool, as it is published. */
  onRefusal(listener: (shed: Shed) => void): void
}

/**
 * Core + backpressure with the routes the tests load: `/hold/:ms` holds its connection that
 * long; `/shared/:ms` runs the same statement on a shared connection (config.db.pipeline); `/low` and `/high` do the same with a priority; `/opted-out/:ms` (db, backpressure:
 * false), `/nodb` (db: false), `/health/live` (no db) and `/health/ready` (db) are exempt.
 */
export async function backpressureApp(
  url: string,
  pool: PoolOptions,
  options: PgPoolBackpressureOptions = {},
): Promise<BackpressureApp> {
  const test = await coreApp(url, pool)
  const { app } = test
  await app.register(pgPoolBackpressure, options)
  const shed: Shed[] = []
  const listeners: ((shed: Shed) => void)[] = []
  const onRefusal = (message: unknown) => {
    const { pool, reason, route } = message as RefusalMessage
    if (pool !== app.pgPool) return
    shed.push({ reason, route })
    for (const listener of listeners) listener({ reason, route })
  }
  channels.refusal.subscribe(onRefusal)
  app.addHook('onClose', async () => {
    channels.refusal.unsubscribe(onRefusal)
  })
  const hold = async (request: FastifyRequest<{ Params: { ms: string } }>) => {
    await request.db`select pg_sleep(${Number(request.params.ms) / 1000})`
    return { ok: true }
  }
  app.get('/hold/:ms', hold)
  app.get('/shared/:ms', { config: { db: { pipeline: true } } }, hold)
  app.get('/low/:ms', { config: { backpressure: { priority: 'low' } } }, hold)
  app.get('/high/:ms', { config: { backpressure: { priority: 'high' } } }, hold)
  app.get('/opted-out/:ms', { config: { backpressure: false } }, hold)
  app.post('/items', async (request) => {
    await request.db`select 1`
    return request.body
  })
  app.get('/nodb', { config: { db: false } }, async () => ({ ok: true }))
  app.get('/health/live', async () => ({ status: 'ok' }))
  app.get('/health/ready', async (request) => {
    await request.db`select 1`
    return { status: 'ok' }
  })
  await app.ready()
  return { ...test, shed, onRefusal: (listener) => listeners.push(listener) }
}

/** Closed-loop clients: each sends `path` again as soon as its previous request answered. */
export async function closedLoop(
  app: FastifyInstance,
  path: string,
  clients: number,
  durationMs: number,
  onResponse: (res: LightMyRequestResponse) => void,
  pauseOn503Ms = 5,
): Promise<void> {
  const until = Date.now() + durationMs
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (Date.now() < until) {
        const res = await app.inject(path)
        onResponse(res)
        if (res.statusCode === 503) await new Promise((resolve) => setTimeout(resolve, pauseOn503Ms))
      }
    }),
  )
}
