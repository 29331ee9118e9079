import { readFileSync } from 'node:fs'
import type { PoolOptions } from '@fastify-pg-pool/core'
import pgPoolHealth, { type HealthResponse, type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import { Ajv } from 'ajv'
import formatsPlugin from 'ajv-formats'
import type { FastifyServerOptions } from 'fastify'
import { expect } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'
import { waitUntil } from '../support/database.js'
import { startTcpProxy } from '../support/tcp-proxy.js'

const schema = JSON.parse(readFileSync(new URL('./health-json.schema.json', import.meta.url), 'utf8'))
const ajv = new Ajv({ allErrors: true, strict: true })
// ajv-formats is CommonJS: under NodeNext its default import is the module object.
;(formatsPlugin as unknown as { default: (ajv: Ajv) => Ajv }).default(ajv)
const validate = ajv.compile(schema)

/** Asserts that `body` is a valid application/health+json document and returns it typed. */
export function expectHealthJson(body: unknown): HealthResponse {
  expect(validate(body), JSON.stringify(validate.errors)).toBe(true)
  return body as HealthResponse
}

export interface Probe {
  status: number
  contentType: string | null
  cacheControl: string | null
  body: HealthResponse
  /** Wall time of the request, ms. */
  ms: number
}

/** GET over a real socket; the body is validated against the health+json schema. */
export async function probe(base: string, path: string): Promise<Probe> {
  const started = performance.now()
  const res = await fetch(base + path, { headers: { connection: 'close' } })
  const text = await res.text()
  const ms = performance.now() - started
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    cacheControl: res.headers.get('cache-control'),
    body: expectHealthJson(JSON.parse(text)),
    ms,
  }
}

/** Core on `url` plus the health plugin. */
export async function healthApp(
  url: string,
  pool: PoolOptions = {},
  health: PgPoolHealthOptions = {},
  server: FastifyServerOptions = {},
): Promise<TestApp> {
  const test = await coreApp(url, pool, server)
  await test.app.register(pgPoolHealth, health)
  return test
}

/**
 * As healthApp, and counts the pings the plugin asks for. The view is frozen (no observer can
 * wrap it), so they are counted where they show: each ping opens a connection of its own to
 * the server, here through a proxy that counts them; the pool's own connections ('connect'
 * events) are the rest. Only for a server that is up: the proxy accepts while it is down.
 */
export async function healthAppCountingPings(
  url: string,
  pool: PoolOptions = {},
  health: PgPoolHealthOptions = {},
): Promise<TestApp & { pings: () => number }> {
  const proxy = await startTcpProxy(Number(new URL(url).port || 5432))
  const test = await coreApp(proxy.urlFor(url), pool)
  let poolConnects = 0
  test.app.pgPool.on('connect', () => {
    poolConnects++
  })
  test.app.addHook('onClose', async () => {
    await proxy.close()
  })
  // From a settled start: no pool connection half-way between the proxy and its 'connect'.
  await waitUntil(() => test.app.pgPool.stats().connecting === 0, 'the pool to finish opening')
  const before = proxy.accepted
  await test.app.register(pgPoolHealth, health)
  return { ...test, pings: () => proxy.accepted - before - poolConnects }
}
