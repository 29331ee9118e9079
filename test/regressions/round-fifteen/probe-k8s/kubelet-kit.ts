import { type ChildProcess, spawn } from 'node:child_process'
import { type Agent, request as httpRequest } from 'node:http'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../../support/embedded-server.js'

const root = fileURLToPath(new URL('../../../..', import.meta.url))

export interface ExampleProcess {
  readonly port: number
  readonly child: ChildProcess
  /** stdout and stderr so far. */
  output(): string
  /** Resolves with the exit code (or signal) once the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Kills it with SIGKILL if it is still running. */
  kill(): void
}

/** examples/basic/src/server.js as the Deployment runs it (DATABASE_URL, HOST, PORT). */
export async function startExample(databaseUrl: string, env: Record<string, string> = {}): Promise<ExampleProcess> {
  const port = await freePort()
  const child = spawn(process.execPath, ['examples/basic/src/server.js'], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, HOST: '127.0.0.1', PORT: String(port), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let text = ''
  child.stdout?.on('data', (chunk) => {
    text += String(chunk)
  })
  child.stderr?.on('data', (chunk) => {
    text += String(chunk)
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  return {
    port,
    child,
    output: () => text,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    },
  }
}

export interface Answer {
  readonly status: number | string
  readonly connection: string | undefined
  readonly body: string
  readonly reused: boolean
}

/** One GET as a kubelet probe or a load balancer sends it; status is an error code or 'timeout' when none came. */
export function get(port: number, path: string, options: { timeoutMs?: number; agent?: Agent } = {}): Promise<Answer> {
  const { timeoutMs = 5_000, agent } = options
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent: agent ?? false })
    const timer = setTimeout(() => {
      req.destroy()
      resolve({ status: 'timeout', connection: undefined, body: '', reused: req.reusedSocket })
    }, timeoutMs)
    req.on('response', (res) => {
      let body = ''
      res.on('data', (chunk) => {
        body += String(chunk)
      })
      res.on('end', () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body, reused: req.reusedSocket })
      })
    })
    req.on('error', (error) => {
      clearTimeout(timer)
      resolve({
        status: (error as { code?: string }).code ?? 'error',
        connection: undefined,
        body: '',
        reused: req.reusedSocket,
      })
    })
    req.end()
  })
}
