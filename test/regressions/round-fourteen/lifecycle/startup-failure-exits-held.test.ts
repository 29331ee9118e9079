import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName } from '../../../support/database.js'
import { freePort } from '../../../support/embedded-server.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// Attack: ready() fails (nothing listens, wrong password, database missing, a server that never
// answers), then the app is closed, or left as it is. Expected: a coded error without the
// password, close() settles, and nothing of the plugin (a pool's sweep, a retry timer, a socket,
// under-pressure's sampler) keeps the process alive: it exits by itself.

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
  proxy.setMode('blackhole')
})
afterAll(async () => {
  await proxy?.close()
  await db?.drop()
})

interface ChildResult {
  readonly exitCode: number | null
  readonly killed: boolean
  readonly lines: Record<string, unknown>[]
}

/** Runs the child; kills it (and says so) if it has not exited 20 s after it printed its report. */
function runChild(
  url: string,
  plugin: string,
  closeMode: string,
  secret: string,
  applicationName = uniqueName(),
): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        fileURLToPath(new URL('./startup-fail-child.mjs', import.meta.url)),
        url,
        plugin,
        closeMode,
        secret,
        db.directUrl,
        applicationName,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], cwd: fileURLToPath(new URL('../../..', import.meta.url)) },
    )
    let out = ''
    let killed = false
    let timer: NodeJS.Timeout | undefined
    child.stdout.on('data', (chunk) => {
      out += String(chunk)
      if (timer === undefined && out.includes('\n')) {
        timer = setTimeout(() => {
          killed = true
          child.kill('SIGKILL')
        }, 20_000)
      }
    })
    const hard = setTimeout(() => {
      killed = true
      child.kill('SIGKILL')
    }, 60_000)
    child.once('exit', (exitCode) => {
      clearTimeout(timer)
      clearTimeout(hard)
      const lines = out
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>)
      resolve({ exitCode, killed, lines })
    })
  })
}

function withPassword(url: string, password: string): string {
  const parsed = new URL(url)
  parsed.password = password
  return parsed.toString()
}

const failures = {
  refused: async () => {
    const url = new URL(db.directUrl)
    url.port = String(await freePort())
    return { url: withPassword(url.toString(), 'refused-secret-1x'), secret: 'refused-secret-1x' }
  },
  // Under trust auth (the local PostgreSQL leg) any password logs in: a role that does not exist
  // is the login refusal there, with the wrong password still in the URL.
  'login refused (wrong password; unknown role under trust auth)': async () => {
    const url = new URL(withPassword(db.directUrl, 'wrong-secret-2y'))
    if (db.password === '') url.username = 'no_such_role_2y'
    return { url: url.toString(), secret: 'wrong-secret-2y' }
  },
  'missing database': async () => {
    const url = new URL(db.directUrl)
    url.pathname = '/no_such_database_here'
    return { url: url.toString(), secret: db.password }
  },
  'never answers': async () => ({ url: proxy.urlFor(db.directUrl), secret: db.password }),
} as const

describe.each(['core', 'umbrella'])('%s: ready() fails', (plugin) => {
  test.each(
    Object.keys(failures).flatMap((failure) => [
      [failure, 'close'],
      [failure, 'none'],
    ]),
  )('%s, then %s: coded, no secret, the process exits by itself', { timeout: 90_000 }, async (failure, closeMode) => {
    const { url, secret } = await failures[failure as keyof typeof failures]()
    const result = await runChild(url, plugin, closeMode, secret)
    const [report, exit] = result.lines
    expect(report).toMatchObject({ ready: false, code: 'FST_PG_POOL_CONNECT_FAILED', leaks: false })
    if (closeMode === 'close') expect(report).toMatchObject({ close: 'resolved' })
    expect({ killed: result.killed, exitCode: result.exitCode, exited: exit !== undefined }).toEqual({
      killed: false,
      exitCode: 0,
      exited: true,
    })
  })
})

describe('a replica that cannot be reached while the primary opens', () => {
  // Since round fifteen (probe-replicas/replica-down-at-register) a replica down at startup fails
  // no register: the app starts, its reads go to the primary. Closed, nothing is left behind.
  test('the app starts; closed, the primary leaves no backend and the process exits', { timeout: 90_000 }, async () => {
    const { url, secret } = await failures.refused()
    const applicationName = uniqueName()
    const result = await runChild(url, 'replica', 'close', secret, applicationName)
    const [report, exit] = result.lines
    expect(report).toMatchObject({ ready: true, close: 'resolved' })
    expect({ killed: result.killed, exitCode: result.exitCode, exited: exit !== undefined }).toEqual({
      killed: false,
      exitCode: 0,
      exited: true,
    })
    expect(await db.countConnections(applicationName)).toBe(0)
  })
})
