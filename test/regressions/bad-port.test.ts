import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import { describe, expect, test } from 'vitest'

// Found by hostile probing (failed before the fix).
// Expected (packages/core/README.md, "Pool options" / DESIGN.md §3): "Invalid options fail at
// `register` with a coded, readable error"; DESIGN §6: "the process never crashes".
//
// What happens: a port that is not a TCP port (-1, 'abc', 70000 in postgres.js options, or
// `:99999` in an entry of a URL host list) is accepted by `register` (lazy pool). The first
// connection attempt then throws `RangeError [ERR_SOCKET_BAD_PORT]` inside postgres.js's
// connect timer (connection.js:354, socket.connect), an unhandled rejection: under Node's default
// (--unhandled-rejections=throw) the process dies, with no response sent. Without `lazy`, the
// same happens during `register` itself. options.ts resolveConnection reads `rest.port` and the
// host-list port without a range check (it only checks Number.isInteger for host lists).

const child = fileURLToPath(new URL('./bad-port-child.mjs', import.meta.url))
const root = fileURLToPath(new URL('../..', import.meta.url))

/** Runs the child with `connection`; resolves with its stdout, stderr and exit code. */
function runChild(connection: unknown): Promise<{ out: string; err: string; code: number | null }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [child, JSON.stringify(connection)], { cwd: root })
    let out = ''
    let err = ''
    proc.stdout.on('data', (chunk) => {
      out += String(chunk)
    })
    proc.stderr.on('data', (chunk) => {
      err += String(chunk)
    })
    // Generous: the child's own timeouts are about 2 s; nothing here waits on speed.
    const killer = setTimeout(() => proc.kill('SIGKILL'), 25_000)
    proc.once('exit', (code) => {
      clearTimeout(killer)
      resolve({ out, err, code })
    })
  })
}

const badPorts: [string, unknown][] = [
  ['options port -1', { host: '127.0.0.1', port: -1, database: 'x' }],
  ["options port 'abc'", { host: '127.0.0.1', port: 'abc', database: 'x' }],
  ['options port 70000', { host: '127.0.0.1', port: 70_000, database: 'x' }],
  ['a URL host list with port 99999', 'postgres://app@127.0.0.1:1,127.0.0.1:99999/x'],
]

describe('a connection port that is not a TCP port', () => {
  for (const [name, connection] of badPorts) {
    test(`${name}: refused at register with FST_PG_POOL_INVALID_OPTION`, async () => {
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

    test(`${name}: the process survives (no unhandled ERR_SOCKET_BAD_PORT) and closes`, async () => {
      const { out, err, code } = await runChild(connection)
      expect(err).not.toMatch(/ERR_SOCKET_BAD_PORT/)
      expect({ code, closed: out.includes('closed') }).toEqual({ code: 0, closed: true })
    })
  }
})
