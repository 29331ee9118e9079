import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, sleep, type TestDatabase, uniqueName, waitUntil } from '../../support/database.js'
import { listen, startRequest } from '../../support/http.js'

declare module '@fastify-pg-pool/core' {
  interface PgPoolInstances {
    other: true
  }
}

// Held attacks (hostile probing, round two of the operational fixes, 4d04f00: closeTimeout starts
// when Fastify stops accepting connections, polled every 50 ms from preClose). Core README:
// closeTimeout is "counted from when Fastify stops accepting connections (after every preClose
// hook)"; docs/faults.md: close() takes at most closeTimeout + 1 s for the cancels. Held: an app
// that never listens (inject), close() called twice, close() before ready(), a listen that failed,
// named instances, the drain not cut short by the clock, and no timer keeping the process alive
// after close (children exit at once). Bounds are generous: only a hang fails them.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

const closeTimeout = 300
const bound = closeTimeout + 1_000 + 5_000

async function hungApp(extra: { health?: Record<string, unknown> } = {}) {
  const app = Fastify(extra.health?.drainDelay === undefined ? {} : { return503OnClosing: false })
  const applicationName = uniqueName()
  await app.register(pgPool, {
    connection: db.url,
    pool: { max: 1, closeTimeout, statementTimeout: 0, applicationName },
    health: extra.health ?? {},
    metrics: false,
  })
  app.get('/hang', async (request) => request.db`select pg_sleep(20)`)
  return { app, applicationName }
}

const sleeping = (name: string) => async () => (await db.running(name, '%pg_sleep%')) === 1

async function timed(close: () => Promise<unknown>): Promise<number> {
  const started = performance.now()
  await close()
  return performance.now() - started
}

describe('close() ends within closeTimeout (+ the cancels)', () => {
  test('an app that never listens (inject): the hung request answers 503 CLOSED', async () => {
    const { app, applicationName } = await hungApp()
    await app.ready()
    const answer = app.inject('/hang')
    await waitUntil(sleeping(applicationName), 'the statement to run', 5_000)
    expect(await timed(() => app.close())).toBeLessThan(bound)
    const response = await answer
    expect({ status: response.statusCode, code: response.json().code }).toEqual({
      status: 503,
      code: 'FST_PG_POOL_CLOSED',
    })
  })

  test('close() called twice (the second while the first waits): both resolve', async () => {
    const { app, applicationName } = await hungApp()
    const base = await listen(app)
    const request = startRequest(`${base}/hang`)
    await waitUntil(sleeping(applicationName), 'the statement to run', 5_000)
    const first = app.close()
    await sleep(100)
    expect(await timed(() => Promise.all([first, app.close()]))).toBeLessThan(bound)
    expect(await request.done).toBe(503)
  })

  test('close() before ready(), and after a listen that failed (EADDRINUSE)', async () => {
    const early = await hungApp()
    expect(await timed(() => early.app.close())).toBeLessThan(bound)
    const blocker = Fastify()
    await blocker.listen({ port: 0, host: '127.0.0.1' })
    try {
      const { port } = blocker.server.address() as { port: number }
      const { app } = await hungApp()
      await expect(app.listen({ port, host: '127.0.0.1' })).rejects.toMatchObject({ code: 'EADDRINUSE' })
      expect(await timed(() => app.close())).toBeLessThan(bound)
    } finally {
      await blocker.close()
    }
  })

  test('named instances, each with a hung statement: both cut, both answer 503', async () => {
    const app = Fastify()
    const names = [uniqueName(), uniqueName()] as const
    await app.register(pgPoolCore, {
      connection: db.url,
      pool: { max: 1, closeTimeout, statementTimeout: 0, applicationName: names[0] },
    })
    await app.register(pgPoolCore, {
      name: 'other',
      connection: db.url,
      pool: { max: 1, closeTimeout, statementTimeout: 0, applicationName: names[1] },
    })
    app.get('/a', async (request) => request.db`select pg_sleep(20)`)
    app.get('/b', async (request) => request.dbs.other`select pg_sleep(20)`)
    const base = await listen(app)
    const requests = [startRequest(`${base}/a`), startRequest(`${base}/b`)]
    await waitUntil(async () => (await sleeping(names[0])()) && (await sleeping(names[1])()), 'both statements', 5_000)
    expect(await timed(() => app.close())).toBeLessThan(bound)
    expect(await Promise.all(requests.map((r) => r.done))).toEqual([503, 503])
  })
})

function runChild(mode: string): Promise<{ line: Record<string, number> | undefined; code: number | null }> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./close-exit-child.mjs', import.meta.url)), db.directUrl, mode],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: fileURLToPath(new URL('../../..', import.meta.url)),
    },
  )
  let out = ''
  child.stdout.on('data', (chunk) => {
    out += String(chunk)
  })
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      const line = out.split('\n').find((l) => l.startsWith('{'))
      resolve({ line: line === undefined ? undefined : JSON.parse(line), code })
    })
  })
}

describe('no timer keeps the process alive after close()', () => {
  for (const mode of ['inject', 'listen', 'named']) {
    test(`${mode}: the process exits right after close() resolved`, async () => {
      const { line, code } = await runChild(mode)
      expect(code).toBe(0)
      expect(line?.status).toBe(503)
      expect(line?.closeMs).toBeLessThan(bound)
      // Nothing is left to wait for: only a timer or socket left behind would hold the process.
      expect(line?.exitMs).toBeLessThan(3_000)
    })
  }
})
