// What a stranger gets: the packages packed as `pnpm publish -r` would pack them, installed with
// plain npm into projects outside the workspace. Shared by the test files of this directory
// (vitest.consumer.config.ts; the CI's "consumer: stranger settings" leg, not `npm test`).
//
// Packing runs each package's `prepack`, which deletes `dist` and rebuilds it: never in this
// checkout (other test files import its `dist`). So the workspace's sources are copied to a
// scratch directory first (its node_modules a symlink to this checkout's), and packed there.
// Tarballs and installed projects are cached under $TMPDIR/fastify-pg-pool-consumer-settings, keyed by a hash of
// what goes into the packages, so that only the first test file of a run pays for them.
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const CACHE = join(tmpdir(), 'fastify-pg-pool-consumer-settings')
const PNPM = 'pnpm@10.34.8'
/** Dependency order: a package after the workspace packages it depends on. */
export const packageDirs = ['core', 'health', 'metrics', 'backpressure', 'otel', 'fastify-pg-pool'] as const
export const packageNames = [
  '@fastify-pg-pool/core',
  '@fastify-pg-pool/health',
  '@fastify-pg-pool/metrics',
  '@fastify-pg-pool/backpressure',
  '@fastify-pg-pool/otel',
  'fastify-pg-pool',
] as const

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
  /** stdout and stderr together. */
  output: string
}

/** Runs a command; never rejects (the exit code says how it went). */
export function run(
  cmd: string,
  args: readonly string[],
  options: { cwd: string; env?: Record<string, string | undefined>; timeout?: number },
): Promise<RunResult> {
  return new Promise((done) => {
    execFile(
      cmd,
      args as string[],
      {
        cwd: options.cwd,
        env: { ...process.env, ...options.env },
        timeout: options.timeout ?? 240_000,
        maxBuffer: 64 * 1024 * 1024,
        killSignal: 'SIGKILL',
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0
        done({ code, stdout: String(stdout), stderr: String(stderr), output: `${stdout}\n${stderr}`.trim() })
      },
    )
  })
}

async function mustRun(cmd: string, args: readonly string[], options: Parameters<typeof run>[2]): Promise<string> {
  const result = await run(cmd, args, options)
  if (result.code !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${options.cwd}) failed:\n${result.output}`)
  return result.stdout
}

function walk(dir: string, out: string[]): void {
  for (const entry of readdirSync(dir).sort()) {
    const path = join(dir, entry)
    if (statSync(path).isDirectory()) walk(path, out)
    else out.push(path)
  }
}

/** A hash of everything that goes into the tarballs. */
function contentKey(): string {
  const files = [join(repo, 'package.json'), join(repo, 'tsconfig.base.json')]
  for (const dir of packageDirs) {
    const base = join(repo, 'packages', dir)
    for (const name of ['package.json', 'tsconfig.json', 'README.md', 'LICENSE']) {
      if (existsSync(join(base, name))) files.push(join(base, name))
    }
    walk(join(base, 'src'), files)
  }
  const hash = createHash('sha1')
  for (const file of files) hash.update(relative(repo, file)).update('\0').update(readFileSync(file)).update('\0')
  return hash.digest('hex').slice(0, 12)
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms))

/**
 * Builds `dir` once (across test files and processes): `build` writes into a scratch directory
 * that is renamed to `dir` when complete. Concurrent callers wait for the first one's lock.
 */
async function once(dir: string, build: (scratch: string) => Promise<void>): Promise<string> {
  if (existsSync(dir)) return dir
  mkdirSync(dirname(dir), { recursive: true })
  const lock = `${dir}.lock`
  for (;;) {
    try {
      mkdirSync(lock)
      break
    } catch {
      if (existsSync(dir)) return dir
      // A lock left by a killed run: older than ten minutes.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 600_000) rmSync(lock, { recursive: true, force: true })
      } catch {}
      await sleep(500)
    }
  }
  try {
    if (existsSync(dir)) return dir
    const scratch = `${dir}.partial-${process.pid}`
    rmSync(scratch, { recursive: true, force: true })
    mkdirSync(scratch, { recursive: true })
    await build(scratch)
    renameSync(scratch, dir)
    return dir
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

/** Cache entries of earlier sources (a few hundred MB each run otherwise): older than six hours. */
function pruneCache(): void {
  try {
    for (const entry of readdirSync(CACHE)) {
      const path = join(CACHE, entry)
      if (Date.now() - statSync(path).mtimeMs > 6 * 3_600_000) rmSync(path, { recursive: true, force: true })
    }
  } catch {}
}

let packed: Promise<string[]> | undefined

/** The six tarballs, packed with pnpm from a copy of the workspace (absolute paths). */
export function tarballs(): Promise<string[]> {
  packed ??= (async () => {
    pruneCache()
    const key = contentKey()
    const dir = await once(join(CACHE, `tgz-${key}`), async (scratch) => {
      const ws = `${scratch}-ws`
      rmSync(ws, { recursive: true, force: true })
      mkdirSync(ws, { recursive: true })
      try {
        for (const name of ['package.json', 'pnpm-workspace.yaml', 'pnpm-lock.yaml', 'tsconfig.base.json', 'LICENSE']) {
          cpSync(join(repo, name), join(ws, name))
        }
        // packages/*/node_modules are relative symlinks into the root's .pnpm: kept as they are,
        // and the root's node_modules is this checkout's.
        cpSync(join(repo, 'packages'), join(ws, 'packages'), {
          recursive: true,
          verbatimSymlinks: true,
          filter: (source) => !/\/(dist|test)$|tsconfig\.tsbuildinfo$/.test(source),
        })
        symlinkSync(join(repo, 'node_modules'), join(ws, 'node_modules'))
        for (const pkg of packageDirs) {
          await mustRun('npx', ['-y', PNPM, 'pack', '--pack-destination', scratch], {
            cwd: join(ws, 'packages', pkg),
            timeout: 300_000,
          })
        }
      } finally {
        rmSync(ws, { recursive: true, force: true })
      }
    })
    const files = readdirSync(dir)
      .filter((file) => file.endsWith('.tgz'))
      .map((file) => join(dir, file))
    if (files.length !== packageDirs.length) throw new Error(`expected ${packageDirs.length} tarballs in ${dir}`)
    return files
  })()
  return packed
}

export interface ProjectSpec {
  /** Registry packages beside the tarballs (`fastify@5.0.0`, `typescript@5.9`). */
  deps?: readonly string[]
  /** Extra npm flags (`--strict-peer-deps`). */
  flags?: readonly string[]
  /** package.json `type`. Default 'module'. */
  type?: 'module' | 'commonjs'
}

/**
 * A project outside the workspace with the tarballs (and `deps`) installed by plain npm; cached
 * by name and content. Returns its directory.
 */
export async function project(name: string, spec: ProjectSpec = {}): Promise<string> {
  const files = await tarballs()
  const key = createHash('sha1').update(JSON.stringify({ files, spec })).digest('hex').slice(0, 10)
  return once(join(CACHE, `project-${name}-${key}`), async (dir) => {
    writeFileSync(
      join(dir, 'package.json'),
      `${JSON.stringify({ name: `stranger-${name}`, private: true, type: spec.type ?? 'module' }, null, 2)}\n`,
    )
    await mustRun(
      'npm',
      ['install', '--no-audit', '--no-fund', '--loglevel=error', ...(spec.flags ?? []), ...files, ...(spec.deps ?? [])],
      { cwd: dir, timeout: 300_000 },
    )
  })
}

/**
 * A project that installs the umbrella alone with pnpm (strict node_modules: only what the app
 * depends on is resolvable from it), the other tarballs standing in for the registry through
 * `pnpm.overrides`. Cached like `project`.
 */
export async function pnpmProject(name: string, deps: Record<string, string>): Promise<string> {
  const files = await tarballs()
  const tarball = (pkg: string) => {
    const base = pkg === 'fastify-pg-pool' ? 'fastify-pg-pool-' : `${pkg.replace('@', '').replace('/', '-')}-`
    const file = files.find(
      (path) => /^\d/.test(path.slice(path.lastIndexOf('/') + 1 + base.length)) && path.includes(`/${base}`),
    )
    if (file === undefined) throw new Error(`no tarball for ${pkg}`)
    return `file:${file}`
  }
  const key = createHash('sha1').update(JSON.stringify({ files, deps })).digest('hex').slice(0, 10)
  return once(join(CACHE, `pnpm-${name}-${key}`), async (dir) => {
    const manifest = {
      name: `stranger-${name}`,
      private: true,
      type: 'module',
      dependencies: { ...deps, 'fastify-pg-pool': tarball('fastify-pg-pool') },
      pnpm: {
        overrides: Object.fromEntries(
          packageNames.filter((pkg) => pkg !== 'fastify-pg-pool').map((pkg) => [pkg, tarball(pkg)]),
        ),
      },
    }
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`)
    await mustRun('npx', ['-y', PNPM, 'install', '--reporter=silent'], { cwd: dir, timeout: 300_000 })
  })
}

/** Writes `files` (name → text) into `dir`, creating folders. */
export function writeFiles(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true })
    writeFileSync(join(dir, name), text)
  }
}

/** A fresh folder inside `dir` for one test's fixtures (its node_modules is the project's). */
export function fixtureDir(dir: string, name: string): string {
  const path = join(dir, 'fixtures', `${name}-${process.pid}-${Date.now()}`)
  rmSync(path, { recursive: true, force: true })
  mkdirSync(path, { recursive: true })
  return path
}

/**
 * `tsc` of the project (its own TypeScript) on `files` inside `cwd`, with `args`; TS errors as
 * lines. `tsc` is the project's `node_modules/.bin/tsc` unless `typescript` names another project.
 */
export async function tsc(
  projectDir: string,
  cwd: string,
  args: readonly string[],
  files: readonly string[],
  typescriptProject = projectDir,
): Promise<{ code: number | null; errors: string[]; output: string }> {
  const bin = join(typescriptProject, 'node_modules/typescript/bin/tsc')
  const result = await run(process.execPath, [bin, '--noEmit', '--pretty', 'false', ...args, ...files], {
    cwd,
    timeout: 300_000,
  })
  const errors = result.stdout.split('\n').filter((line) => /error TS\d+/.test(line))
  return { code: result.code, errors, output: result.output }
}

/** The first fenced block of `lang` in a markdown file of the repo. */
export function firstBlock(file: string, lang: string): string {
  const text = readFileSync(join(repo, file), 'utf8')
  const match = new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, 'm').exec(text)
  if (!match?.[1]) throw new Error(`${file} has no \`\`\`${lang} block`)
  return match[1]
}
