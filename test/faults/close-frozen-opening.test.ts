import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

// Found by hostile probing (failed on 0dc7bab: the child exited 20 s after app.close(), its
// connectTimeout): an opening abandoned by app.close() sent a cancel request (connection-factory.ts giveUp).
// Against a frozen server the cancel's own connection is never answered: it must not keep the
// process alive after app.close() (the pool's other cancels are bounded at 1 s).

let db: TestDatabase
let proxy: TcpProxy
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterAll(async () => {
  await proxy?.close()
  await db?.drop()
})

const child = new URL('./close-frozen-opening-child.mjs', import.meta.url).pathname

function run(connectTimeout: number): Promise<{ code: number | null; stdout: string; exitAfterCloseMs: number }> {
  const proc = spawn(process.execPath, [child], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { ...process.env, PROBE_URL: proxy.urlFor(db.directUrl), PROBE_CONNECT_TIMEOUT: String(connectTimeout) },
  })
  let stdout = ''
  let closedAt = 0
  proc.stdout.on('data', (chunk) => {
    stdout += chunk
    if (stdout.includes('onconnect') && proxy.mode !== 'blackhole') proxy.setMode('blackhole')
    const m = /closed (\d+)/.exec(stdout)
    if (m && closedAt === 0) closedAt = Date.now()
  })
  proc.stderr.on('data', (chunk) => {
    stdout += chunk
  })
  return new Promise((resolve) =>
    proc.once('close', (code) => resolve({ code, stdout, exitAfterCloseMs: Date.now() - closedAt })),
  )
}

describe('app.close() during an opening on a frozen server', () => {
  test('the process exits promptly after app.close() (the cancel request does not hold it)', async () => {
    proxy.setMode('pass')
    const result = await run(20_000)
    expect(result.stdout, result.stdout).toContain('closed')
    expect(result.exitAfterCloseMs).toBeLessThan(2_000)
  }, 60_000)
})
