// Found by hostile probing (round ten, the newest code):
// - `connection.onnotice` / `onclose` given as async functions that reject ended the process (an
//   unhandled rejection): the pool's wrapper caught a synchronous throw only.
// - PGSSL=disable or PGSSL=false in the environment tried TLS (postgres.js reads PGSSL where the
//   connection names no mode and takes any string as one): register failed against a server
//   without TLS. An unknown PGSSL was not refused.
// Every test failed before the fix, in a child process (the process itself is at stake).
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function runChild(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ line: Record<string, unknown> | undefined; code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: { ...process.env, ...env },
  })
  let out = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    out += String(chunk)
  })
  child.stderr.on('data', (chunk) => {
    stderr += String(chunk)
  })
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      const line = out.split('\n').find((l) => l.startsWith('{'))
      resolve({ line: line === undefined ? undefined : JSON.parse(line), code, stderr: stderr.slice(-400) })
    })
  })
}

describe('connection.onnotice / onclose given as async functions that reject', () => {
  for (const scenario of ['reject-notice', 'reject-close'] as const) {
    test(`${scenario}: the app goes on serving (no unhandled rejection ends the process)`, async () => {
      const got = await runChild('./connection-callbacks-child.mjs', [db.directUrl, uniqueName('cb'), scenario])
      // Observed: { line: undefined, code: 1 }, stderr "Error: onnotice rejected" / "onclose rejected".
      expect({ line: got.line, code: got.code }).toEqual({
        line: expect.objectContaining({ status: 200, after: 200 }),
        code: 0,
      })
    })
  }
})

describe('PGSSL from the environment', () => {
  for (const value of ['disable', 'false'] as const) {
    for (const form of ['url', 'options'] as const) {
      test(`PGSSL=${value}, connection as ${form}: no TLS `, async () => {
        const got = await runChild('./connection-env-child.mjs', [db.directUrl, form], { PGSSL: value })
        const line = got.line as { registered: boolean; ssl?: boolean; code?: string; cause?: string } | undefined
        expect(line).toEqual({ registered: true, ssl: false })
      })
    }
  }

  test('an unknown PGSSL is refused at register, named', async () => {
    const got = await runChild('./connection-env-child.mjs', [db.directUrl, 'url'], { PGSSL: 'sometimes' })
    expect(got.line).toMatchObject({ registered: false, code: 'FST_PG_POOL_INVALID_OPTION' })
    expect(String(got.line?.cause)).toContain('PGSSL')
  })

  test("the connection's own TLS mode wins over PGSSL, as in postgres.js", async () => {
    const got = await runChild('./connection-env-child.mjs', [`${db.directUrl}?sslmode=disable`, 'url'], {
      PGSSL: 'sometimes',
    })
    expect(got.line).toEqual({ registered: true, ssl: false })
  })
})
