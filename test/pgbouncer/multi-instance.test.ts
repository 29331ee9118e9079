import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.js'

// Runs only in the PgBouncer leg (vitest.pgbouncer.config.ts): it needs the pgbouncer binary.
const instances: ChildProcess[] = []
let db: TestDatabase
let bouncer: PgBouncer
let ports: number[] = []

beforeAll(async () => {
  db = await createTestDatabase()
  bouncer = await startPgBouncer({ upstream: db.directUrl, defaultPoolSize: 10 })
  const script = fileURLToPath(new URL('./fixtures/instance.mjs', import.meta.url))
  ports = await Promise.all(
    Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, [script], {
        env: { ...process.env, DATABASE_URL: bouncer.via(db.directUrl) },
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      instances.push(child)
      return new Promise<number>((resolve, reject) => {
        child.stdout?.once('data', (chunk) => resolve(Number(String(chunk).trim())))
        child.once('exit', (code) => reject(new Error(`instance exited with ${code}`)))
      })
    }),
  )
})
afterAll(async () => {
  await Promise.all(
    instances.map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null) return resolve(null)
          child.once('exit', resolve)
          child.kill('SIGTERM')
        }),
    ),
  )
  await bouncer?.stop()
  await db?.drop()
})

describe('4 instances x pool max 5 behind PgBouncer (default_pool_size 10)', () => {
  test('the server never sees more than 10 connections; every request succeeds or gets a 503', async () => {
    const monitor = postgres(new URL('/postgres', db.directUrl).toString().replace(/\/postgres$/, '/postgres'), {
      max: 1,
      onnotice: () => {},
    })
    const database = new URL(db.directUrl).pathname.slice(1)
    let peak = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const [row] = await monitor<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity where datname = ${database}`
        peak = Math.max(peak, row?.n ?? 0)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })()
    const statuses: (number | 'hung')[] = []
    for (let round = 0; round < 3; round++) {
      const requests = ports.flatMap((port) =>
        Array.from({ length: 30 }, () =>
          fetch(`http://127.0.0.1:${port}/work`, { signal: AbortSignal.timeout(10_000) }).then(
            (res) => res.status,
            () => 'hung' as const,
          ),
        ),
      )
      statuses.push(...(await Promise.all(requests)))
    }
    sampling = false
    await sampler
    await monitor.end()
    const counts = statuses.reduce<Record<string, number>>((acc, s) => {
      acc[s] = (acc[s] ?? 0) + 1
      return acc
    }, {})
    console.log(`multi-instance: ${JSON.stringify(counts)}, peak server connections ${peak}`)
    expect(statuses).toHaveLength(360)
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true)
    expect(counts[200]).toBeGreaterThan(0)
    expect(peak).toBeGreaterThan(0)
    expect(peak).toBeLessThanOrEqual(10)
  })
})
