import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../support/database.js'

// Held attacks (hostile probing, round two of the operational fixes): postgres.js takes every option
// it is not given from `PG` + the option's name uppercased. None of these changes what the pool
// guarantees: connections are not retired on postgres.js's timers (PGIDLE_TIMEOUT, PGMAX_LIFETIME:
// the same backend serves after the period), statements of one request and of pipelined requests
// get their own answers also with postgres.js's pipeline limited (PGMAX_PIPELINE=0 or 1, a
// statement whose value cannot be serialized among them), a failed statement's parameters reach no
// log line or body (PGDEBUG), LISTEN works, the ping answers, the process sees no uncaught error.
// Each runs in a child process (the environment is the process's).

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function runChild(
  env: NodeJS.ProcessEnv,
): Promise<{ line: Record<string, unknown> | undefined; code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./postgres-env-child.mjs', import.meta.url)), db.directUrl, uniqueName('env')],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: fileURLToPath(new URL('../../..', import.meta.url)),
      env: { ...process.env, ...env },
    },
  )
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

const expected = {
  samePid: true,
  mix: ['first', 'second', 'rejected', 'fourth'],
  echoes: true,
  secretStatus: 500,
  secretLeaked: false,
  heard: 'hello',
  ping: 'ok',
  processErrors: [],
}

describe('PG* variables postgres.js reads', () => {
  const cases: Record<string, string>[] = [
    { PGIDLE_TIMEOUT: '0.3' },
    { PGMAX_LIFETIME: '0.3' },
    { PGMAX_PIPELINE: '1' },
    { PGMAX_PIPELINE: '0' },
    { PGKEEP_ALIVE: '-1', PGBACKOFF: 'x', PGCONNECT_TIMEOUT: '0.001' },
    { PGPREPARE: 'false', PGFETCH_TYPES: 'false', PGPUBLICATIONS: 'x' },
    { PGDEBUG: 'true', PGSSLNEGOTIATION: 'direct', PGTARGET_SESSION_ATTRS: 'bogus' },
  ]
  for (const env of cases) {
    test(
      Object.entries(env)
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
      async () => {
        const got = await runChild(env)
        expect({ line: got.line, code: got.code }, got.stderr).toEqual({ line: expected, code: 0 })
      },
    )
  }
})
