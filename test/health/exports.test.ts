import * as health from '@fastify-pg-pool/health'
import pgPoolHealth, { pgPoolHealth as named } from '@fastify-pg-pool/health'
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
