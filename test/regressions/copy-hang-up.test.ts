import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../support/database.js'

// Found by hostile probing (round nine, growth), driving a mixed workload with client hang-ups.
// Both tests failed before the fix (the child process died: Unhandled 'error' event,
// FST_PG_POOL_ABORTED): every COPY stream now gets the adapter's error listener at birth. A child process runs
// the app (copy-hang-up-child.mjs): an uncaught exception there ends it, as it would end a
// service, without disturbing this worker.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function runChild(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('./copy-hang-up-child.mjs', import.meta.url))], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk))
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

// Before the fix: the process crashed. A GET returns `request.db.unsafe('copy (...) to stdout').readable()`
// as its payload (the README's way of streaming an export); the COPY produces its first rows
// slowly (here 1 ms a row: the server flushes CopyOutResponse with the first 8 kB of rows, about
// 1.7 s in), and the client hangs up before that (after 5, 30, 100, 300 or 1000 ms: 4 or 5 of
// the 5 crash). The pool cancels the statement; the server then flushes CopyOutResponse, some
// rows and the 57014; postgres.js creates the COPY stream for the first and destroys it with
// the second, which the core re-labels FST_PG_POOL_ABORTED (Lease.streamError). The handler
// never got that stream (its readable() was stopped), nothing listens for its 'error':
// "Unhandled 'error' event ... code: 'FST_PG_POOL_ABORTED'", exit code 1. Any client can take
// the service down by hanging up on a slow export endpoint.
test('a client hanging up on a slow COPY TO STDOUT payload never crashes the process', async () => {
  const { code, stdout, stderr } = await runChild({
    PG_URL: db.directUrl,
    APP_NAME: uniqueName('copy-hang-up'),
    HANG_UPS: '5,30,100,300,1000',
  })
  const crash = /Unhandled 'error' event[\s\S]*?code: '(\w+)'/.exec(stderr)?.[1] ?? /code: '(\w+)'/.exec(stderr)?.[1]
  expect({ code, crash, done: stdout.includes('"done":true') }).toEqual({ code: 0, crash: undefined, done: true })
  expect(JSON.parse(stdout.trim().split('\n').at(-1) as string)).toMatchObject({ leased: 0 })
}, 45_000)

// Before the fix: the same crash without any client: the route's handlerTimeout (100 ms) fires while the
// COPY has not produced its first 8 kB; the reply is a 503 FST_PG_POOL_ABORTED, the pool cancels
// the COPY, readable() then resolves (the handler gets a stream its reply no longer sends), and
// the 57014 destroys it with no listener: exit code 1 on the first request (app.inject alone).
test('a handlerTimeout during a slow COPY TO STDOUT answers 503 and never crashes the process', async () => {
  const { code, stdout, stderr } = await runChild({
    PG_URL: db.directUrl,
    APP_NAME: uniqueName('copy-timeout'),
    MODE: 'handlerTimeout',
  })
  const crash = /Unhandled 'error' event[\s\S]*?code: '(\w+)'/.exec(stderr)?.[1] ?? /code: '(\w+)'/.exec(stderr)?.[1]
  expect({ code, crash, done: stdout.includes('"done":true') }).toEqual({ code: 0, crash: undefined, done: true })
  expect(JSON.parse(stdout.trim().split('\n').at(-1) as string)).toMatchObject({ statuses: [503, 503, 503], leased: 0 })
}, 45_000)
