// Round ten of hostile probing, the newest code (chainedCallbacks, ssl 'disable'): attacks that held.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

let db: TestDatabase
const apps: FastifyInstance[] = []
beforeAll(async () => {
  db = await createTestDatabase()
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})
afterAll(() => db.drop())

function optionsOf(url: string) {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port),
    database: u.pathname.slice(1),
    user: decodeURIComponent(u.username),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  }
}

describe('held: connection callbacks that throw', () => {
  test('onnotice and onclose throwing synchronously: called, swallowed, the app serves on after a terminated backend', async () => {
    const child = spawn(
      process.execPath,
      [
        fileURLToPath(new URL('../regressions/connection-callbacks-child.mjs', import.meta.url)),
        db.directUrl,
        uniqueName('cb'),
        'throw-sync',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('../..', import.meta.url)) },
    )
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += String(chunk)
    })
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 25_000)
      child.once('exit', (exit) => {
        clearTimeout(timer)
        resolve(exit)
      })
    })
    const line = out.split('\n').find((l) => l.startsWith('{'))
    const got = line === undefined ? undefined : (JSON.parse(line) as { close: number })
    expect({ code, line: got }).toEqual({
      code: 0,
      // One notice per request; a close for the terminated backend (and one at app.close()).
      line: { status: 200, after: 200, notice: 2, close: expect.any(Number) },
    })
    expect(got?.close).toBeGreaterThanOrEqual(1)
  })
})

describe('held: ssl modes against a server without TLS', () => {
  async function sslOf(ssl: unknown): Promise<boolean | string> {
    const app = Fastify()
    apps.push(app)
    try {
      await app.register(pgPoolCore, {
        connection: { ...optionsOf(db.directUrl), ssl } as never,
        pool: { max: 1, connectTimeout: 3_000, applicationName: uniqueName() },
      })
      await app.ready()
      const [row] = await app.db<
        { ssl: boolean }[]
      >`select coalesce((select ssl from pg_stat_ssl where pid = pg_backend_pid()), false) as ssl`
      return row?.ssl as boolean
    } catch (error) {
      return String((error as { code?: string }).code)
    }
  }

  test("false, 'disable' and 'prefer' connect without TLS; 'require', 'allow' and true fail to connect with a coded error", async () => {
    expect({
      false: await sslOf(false),
      disable: await sslOf('disable'),
      prefer: await sslOf('prefer'),
      require: await sslOf('require'),
      allow: await sslOf('allow'),
      true: await sslOf(true),
    }).toEqual({
      false: false,
      disable: false,
      prefer: false,
      require: 'FST_PG_POOL_CONNECT_FAILED',
      allow: 'FST_PG_POOL_CONNECT_FAILED',
      true: 'FST_PG_POOL_CONNECT_FAILED',
    })
  })
})
