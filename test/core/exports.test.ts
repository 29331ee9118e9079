import { readFileSync } from 'node:fs'
import * as core from '@fastify-pg-pool/core'
import pgPoolCoreDefault, { errors, pgPoolCore } from '@fastify-pg-pool/core'
import { describe, expect, test } from 'vitest'

describe('@fastify-pg-pool/core exports', () => {
  test('the plugin is the default and a named export, with fastify-plugin metadata', () => {
    expect(pgPoolCoreDefault).toBe(pgPoolCore)
    const meta = (pgPoolCore as unknown as Record<symbol, { name: string; fastify: string }>)[Symbol.for('plugin-meta')]
    expect(meta).toMatchObject({ name: '@fastify-pg-pool/core', fastify: '5.x' })
    expect(Object.keys(core).sort()).toEqual([
      'DatabaseError',
      'channelNames',
      'channels',
      'default',
      'defaultErrorMapping',
      'errors',
      'hangUp',
      'optionKit',
      'pgPoolCore',
      'routeInstance',
      'usesDatabase',
      'withoutDatabase',
    ])
  })

  test('every error code is documented in the README with its status', () => {
    const readme = readFileSync(new URL('../../packages/core/README.md', import.meta.url), 'utf8')
    for (const [code, ErrorClass] of Object.entries(errors)) {
      const status = new (ErrorClass as new (...a: unknown[]) => { statusCode: number })('x', 'y').statusCode
      expect(readme, code).toMatch(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`))
    }
  })

  test('every documented pool option exists and has the documented default', () => {
    const readme = readFileSync(new URL('../../packages/core/README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Pool options'), readme.indexOf('## `app.pgPool`'))
    const rows = [...section.matchAll(/^\|\s*`(\w+)`\s*\|/gm)].map((m) => m[1])
    expect(rows).toEqual([
      'max',
      'acquireTimeout',
      'maxWaiting',
      'idleTimeout',
      'maxLifetime',
      'maxPreparedStatements',
      'connectTimeout',
      'statementTimeout',
      'leakDetectionThreshold',
      'closeTimeout',
      'applicationName',
      'pgbouncer',
      'sessionReset',
      'retryAfter',
      'lazy',
      'pipelineDepth',
      'instances',
    ])
  })
})
