import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { afterEach, describe, expect, test } from 'vitest'

const server = new URL('../../examples/basic/src/server.js', import.meta.url).pathname

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs the demo on embedded PostgreSQL with its own TMPDIR; `onOutput` may act on its output. */
function demo(env: Record<string, string>, onOutput?: (stdout: string, pid: number) => void): Promise<Run> {
  const { DATABASE_URL: _, ...rest } = process.env
  const child = spawn(process.execPath, [server], { env: { ...rest, HOST: '127.0.0.1', ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    onOutput?.(stdout, child.pid ?? 0)
  })
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })))
}

/** A fresh TMPDIR the demo's `postgres` user can enter, as it can /tmp. */
function freshTmp(): string {
  const dir = mkdtempSync(`${tmpdir()}/fpp-demo-test-`)
  chmodSync(dir, 0o755)
  return dir
}

let tmp: string
let holder: Server | undefined
afterEach(() => {
  holder?.close()
  holder = undefined
  rmSync(tmp, { recursive: true, force: true })
})

describe('npm run demo (examples/basic)', () => {
  test('a taken port: one line naming PORT, exit 1, nothing left in the temporary directory', async () => {
    tmp = freshTmp()
    holder = createServer()
    await new Promise<void>((resolve) => holder?.listen(0, '127.0.0.1', resolve))
    const port = (holder.address() as { port: number }).port

    const run = await demo({ PORT: String(port), TMPDIR: tmp })

    expect(run.code).toBe(1)
    expect(run.stderr.trim()).toMatch(
      new RegExp(
        `^Port ${port} on 127\\.0\\.0\\.1 is taken by another program: PORT=\\d+ npm run demo picks another\\.$`,
      ),
    )
    expect(run.stdout).not.toContain('EADDRINUSE')
    expect(readdirSync(tmp)).toEqual([])
  }, 60_000)

  test('SIGINT once it serves: stops the database and removes its directory', async () => {
    tmp = freshTmp()
    let sent = false
    const run = await demo({ PORT: '0', TMPDIR: tmp }, (stdout, pid) => {
      if (!sent && stdout.includes('Ctrl-C stops the app and the database.')) {
        sent = true
        process.kill(pid, 'SIGINT')
      }
    })

    expect(sent).toBe(true)
    expect(run.stdout).toContain('/health/ready')
    expect(readdirSync(tmp)).toEqual([])
  }, 60_000)
})
