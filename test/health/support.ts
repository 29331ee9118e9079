import { readFileSync } from 'node:fs'
import type { PoolOptions } from '@fastify-pg-pool/core'
import pgPoolHealth, { type HealthResponse, type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import { Ajv } from 'ajv'
import formatsPlugin from 'ajv-formats'
import type { FastifyServerOptions } from 'fastify'
import { expect } from 'vitest'
import { coreApp, type TestApp } from '../support/app.js'

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

/** Core on `url` plus the health plugin; `instrument` sees the view before health registers. */
export async function healthApp(
  url: string,
  pool: PoolOptions = {},
  health: PgPoolHealthOptions = {},
  server: FastifyServerOptions = {},
): Promise<TestApp & { pings: () => number }> {
  const test = await coreApp(url, pool, server)
  let pings = 0
  const ping = test.app.pgPool.ping
  // Counts the pings the plugin asks for; each still opens a real connection to the server.
  test.app.pgPool.ping = (timeoutMs) => {
    pings++
    return ping(timeoutMs)
  }
  await test.app.register(pgPoolHealth, health)
  return { ...test, pings: () => pings }
}
