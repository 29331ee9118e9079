import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { afterEach, describe, expect, test } from 'vitest'

// Found by hostile probing, round 2 (options), failing before the fix. packages/core/README.md "Connection": "a port outside
// 1–65535 (postgres.js would throw it from a timer and end the process)" is refused at `register`
// with FST_PG_POOL_INVALID_OPTION; DESIGN §6: the process never crashes.
//
// The fix (7c87ec1) checks `connection.port`, a URL's port and a URL host list's ports, but not the
// other places postgres.js takes a port from: a `host` string with `:port` (postgres.js splits
// `host.split(',').map(x => x.split(':')[1])`, index.js parseOptions), PGPORT, and PGHOST with
// `:port`. Each is accepted, and the first connection attempt throws ERR_SOCKET_BAD_PORT from
// postgres.js's connect timer: the process dies.

const child = fileURLToPath(new URL('./port-child.mjs', import.meta.url))
const root = fileURLToPath(new URL('../..', import.meta.url))
const PG_KEYS = ['DATABASE_URL', 'PGHOST', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGPASSWORD'] as const

function runChild(
  connection: unknown,
  env: Record<string, string>,
): Promise<{ out: string; err: string; code: number | null }> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { ...process.env }
    for (const key of PG_KEYS) delete childEnv[key]
    const proc = spawn(process.execPath, [child, JSON.stringify(connection ?? null)], {
      cwd: root,
      env: { ...childEnv, ...env },
    })
    let out = ''
    let err = ''
    proc.stdout.on('data', (chunk) => {
      out += String(chunk)
    })
    proc.stderr.on('data', (chunk) => {
      err += String(chunk)
    })
    // Generous: the child's own timeouts are about 2 s; nothing here waits on speed.
    const killer = setTimeout(() => proc.kill('SIGKILL'), 40_000)
    proc.once('exit', (code) => {
      clearTimeout(killer)
      resolve({ out, err, code })
    })
  })
}

const saved = Object.fromEntries(PG_KEYS.map((key) => [key, process.env[key]]))
afterEach(() => {
  for (const key of PG_KEYS) {
    if (saved[key] === undefined) delete process.env[key]
    else process.env[key] = saved[key]
  }
})

const cases: [string, unknown, Record<string, string>][] = [
  ["options host '127.0.0.1:99999'", { host: '127.0.0.1:99999', database: 'x' }, {}],
  [
    "options host list string '127.0.0.1:1,127.0.0.1:70000'",
    { host: '127.0.0.1:1,127.0.0.1:70000', database: 'x' },
    {},
  ],
  ['PGPORT=99999 (no connection)', undefined, { PGHOST: '127.0.0.1', PGPORT: '99999', PGDATABASE: 'x' }],
  ['PGHOST=127.0.0.1:99999 (no connection)', undefined, { PGHOST: '127.0.0.1:99999', PGDATABASE: 'x' }],
]

describe('a port outside 1-65535 from a host string or the PG* environment', () => {
  for (const [name, connection, env] of cases) {
    test(`${name}: refused at register with FST_PG_POOL_INVALID_OPTION`, async () => {
      for (const key of PG_KEYS) delete process.env[key]
      Object.assign(process.env, env)
      const app = Fastify()
      const error = await app
        .register(pgPoolCore, { connection: connection as never, pool: { lazy: true } })
        .ready()
        .then(
          () => undefined,
          (e: Error & { code?: string }) => e,
        )
      await app.close().catch(() => {})
      expect(error?.code).toBe('FST_PG_POOL_INVALID_OPTION')
    })

    test(`${name}: the process survives (no ERR_SOCKET_BAD_PORT) and closes`, async () => {
      const { out, err, code } = await runChild(connection, env)
      expect(err).not.toMatch(/ERR_SOCKET_BAD_PORT/)
      expect({ code, closed: out.includes('closed') }).toEqual({ code: 0, closed: true })
    })
  }
})
