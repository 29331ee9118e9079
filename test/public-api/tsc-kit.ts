import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// Type-checks a fixture against the workspace's built declarations (packages/*/dist, reached by
// name through the workspace's node_modules) with the workspace's own TypeScript, under compiler
// settings of the caller's choosing. The fixture is written to a throwaway folder inside this
// directory (so that `fastify-pg-pool` and `@fastify-pg-pool/*` resolve as they do for the
// tests), and removed afterwards.

const here = fileURLToPath(new URL('.', import.meta.url))
const repo = join(here, '../..')
const tscBin = join(repo, 'node_modules/typescript/bin/tsc')

export const strict = ['--strict', '--target', 'es2022', '--lib', 'es2023', '--types', 'node'] as const

export interface TscResult {
  readonly code: number | null
  /** `file(line,col): error TSnnnn: ...` lines, the fixture's path made relative to its folder. */
  readonly errors: string[]
}

export async function typecheck(files: Record<string, string>, args: readonly string[]): Promise<TscResult> {
  const dir = mkdtempSync(join(here, '.fixture-'))
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
    const entries = Object.keys(files).filter((name) => name.endsWith('.ts'))
    const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(
        process.execPath,
        [tscBin, '--noEmit', '--pretty', 'false', ...args, ...entries],
        { cwd: dir, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 },
        (error, out) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout: String(out) }),
      )
    })
    const errors = stdout
      .split('\n')
      .filter((line) => /error TS\d+/.test(line))
      .map((line) => line.split(dir).join('<fixture>'))
    return { code, errors }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
