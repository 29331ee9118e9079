import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { uniqueName } from '../support/database.js'

export interface ChildOutcome {
  /** The child's JSON line (undefined if it printed none). */
  readonly result: Record<string, unknown> | undefined
  /** It exited by itself within `exitWithinMs` of printing its line. */
  readonly exited: boolean
  readonly code: number | null
  readonly stderr: string
}

/**
 * Runs listen-child.mjs (`scenario`, `delay`) against `url`; waits for its line, then up to
 * `exitWithinMs` for it to exit by itself, and kills it (its own pid) otherwise.
 */
export function runChild(url: string, scenario: string, delay: number, exitWithinMs = 6_000): Promise<ChildOutcome> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./listen-child.mjs', import.meta.url)), url, uniqueName('lc'), scenario, String(delay)],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('../..', import.meta.url)) },
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
    let result: Record<string, unknown> | undefined
    let timer: NodeJS.Timeout | undefined
    const overall = setTimeout(() => finish(false, null), 30_000)
    const finish = (exited: boolean, code: number | null) => {
      clearTimeout(timer)
      clearTimeout(overall)
      if (!exited && child.exitCode === null) child.kill('SIGKILL')
      resolve({ result, exited, code, stderr })
    }
    child.stdout.on('data', () => {
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (line !== undefined && result === undefined) {
        result = JSON.parse(line)
        timer = setTimeout(() => finish(false, null), exitWithinMs)
      }
    })
    child.once('exit', (code) => finish(result !== undefined, code))
  })
}
