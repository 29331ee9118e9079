import { readFileSync } from 'node:fs'
import * as backpressure from '@fastify-pg-pool/backpressure'
import * as core from '@fastify-pg-pool/core'
import * as health from '@fastify-pg-pool/health'
import * as metrics from '@fastify-pg-pool/metrics'
import { errors } from 'fastify-pg-pool'
import { describe, expect, test } from 'vitest'

type ErrorTable = Record<string, unknown>

const packages: Record<string, { errors?: ErrorTable }> = {
  '@fastify-pg-pool/core': core,
  '@fastify-pg-pool/health': health as { errors?: ErrorTable },
  '@fastify-pg-pool/metrics': metrics,
  '@fastify-pg-pool/backpressure': backpressure,
}

describe('fastify-pg-pool errors', () => {
  test("hold every package's codes, each the package's own constructor, and no other", () => {
    const union: ErrorTable = {}
    for (const [name, pkg] of Object.entries(packages)) {
      for (const [code, ErrorClass] of Object.entries(pkg.errors ?? {})) {
        // A code two packages share is one constructor: `instanceof` works whichever raised it.
        if (code in union) expect(ErrorClass, `${name} ${code}`).toBe(union[code])
        union[code] = ErrorClass
      }
    }
    expect(Object.keys(errors).sort()).toEqual(Object.keys(union).sort())
    for (const [code, ErrorClass] of Object.entries(union))
      expect(errors[code as keyof typeof errors], code).toBe(ErrorClass)
    // The three that were missing before.
    for (const code of ['FST_PG_POOL_OVERLOADED', 'FST_PG_POOL_PROCESS_PRESSURE', 'FST_PG_POOL_METRICS_DUPLICATE']) {
      expect(Object.keys(errors)).toContain(code)
    }
  })

  test('each code is documented, with its status, in the README of a package that raises it', () => {
    const readmes = ['core', 'health', 'metrics', 'backpressure'].map((dir) =>
      readFileSync(new URL(`../../packages/${dir}/README.md`, import.meta.url), 'utf8'),
    )
    for (const [code, ErrorClass] of Object.entries(errors)) {
      const status = new (ErrorClass as new (...a: unknown[]) => { statusCode: number })('x', 'y').statusCode
      const row = new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`)
      expect(
        readmes.some((readme) => row.test(readme)),
        code,
      ).toBe(true)
    }
  })
})
