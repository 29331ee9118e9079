import { readFileSync } from 'node:fs'
import * as health from '@fastify-pg-pool/health'
import pgPoolHealth, { pgPoolHealth as named, type PgPoolHealthOptions } from '@fastify-pg-pool/health'
import { describe, expect, test } from 'vitest'

describe('@fastify-pg-pool/health exports', () => {
  test('the plugin is the default and a named export, with fastify-plugin metadata', () => {
    expect(pgPoolHealth).toBe(named)
    const meta = (pgPoolHealth as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')]
    expect(meta).toEqual({
      name: '@fastify-pg-pool/health',
      fastify: '5.x',
      dependencies: ['@fastify-pg-pool/core'],
    })
    expect(Object.keys(health).sort()).toEqual(['default', 'pgPoolHealth'])
  })
})

describe('@fastify-pg-pool/health README', () => {
  test('the options table documents every option of PgPoolHealthOptions, and no other', () => {
    const readme = readFileSync(new URL('../../packages/health/README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Options'), readme.indexOf('## Draining'))
    const documented = [...section.matchAll(/^\|([^|]+)\|/gm)]
      .flatMap((row) => [...(row[1] as string).matchAll(/`(\w+)`/g)].map((m) => m[1]))
      .sort()
    const options: Record<keyof PgPoolHealthOptions, true> = {
      prefix: true,
      livePath: true,
      readyPath: true,
      healthPath: true,
      pingTimeout: true,
      pingWarn: true,
      cacheTime: true,
      warnWaiting: true,
      failWaiting: true,
      requireDatabase: true,
      requireInstances: true,
      details: true,
      drainDelay: true,
      logLevel: true,
      serviceId: true,
      description: true,
      version: true,
      releaseId: true,
    }
    expect(documented).toEqual(Object.keys(options).sort())
  })
})
