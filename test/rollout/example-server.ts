import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { waitFor, waitUntil } from '../support/database.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

/** examples/basic/src/server.js (the Kubernetes example's image) in a process of its own. */
export interface ExampleServer {
  readonly child: ChildProcess
  readonly base: string
  /** Everything it wrote on stdout and stderr. */
  output(): string
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined
  /** Waits up to `timeoutMs` for the process to exit; true if it did. */
  waitExit(timeoutMs: number): Promise<boolean>
  /** SIGKILL if still running. */
  kill(): void
}

export async function startExampleServer(databaseUrl: string): Promise<ExampleServer> {
  const child = spawn(process.execPath, ['examples/basic/src/server.js'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, PORT: '0', HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout?.on('data', (chunk) => {
    out += String(chunk)
  })
  child.stderr?.on('data', (chunk) => {
    out += String(chunk)
  })
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
  child.once('exit', (code, signal) => {
    exit = { code, signal }
  })
  const address = /demo on (http:\/\/[^;\s]+)/
  await waitUntil(() => address.test(out) || exit !== undefined, 'the example server to listen', 30_000)
  const match = address.exec(out)
  if (!match?.[1]) throw new Error(`the example server did not start: ${out}`)
  return {
    child,
    base: match[1],
    output: () => out,
    exited: () => exit,
    waitExit: (timeoutMs) => waitFor(() => exit !== undefined, timeoutMs, 50),
    kill: () => {
      if (exit === undefined) child.kill('SIGKILL')
    },
  }
}
