#!/usr/bin/env node
// The postgres.js versions leg: the adapter's contract test
// (packages/core/test/postgres-adapter.contract.test.ts), the core's smoke
// (packages/core/test/core-smoke.contract.test.ts) and the suite's tests of what differs between
// versions (TESTS below) on each postgres.js version that the core's
// `postgres` range admits: its lowest and its newest on the registry. Each version is installed
// with npm into a temporary directory outside the workspace, and vitest resolves `postgres` there
// for every file it runs (tests, test support, the core's source); the workspace, its
// node_modules and pnpm-lock.yaml are left as they are.
//
// POSTGRES_VERSIONS=3.4.9,4.2.0 runs those versions instead. A version outside the range is a
// probe: run with a short test timeout (its queries may never settle) and reported, never failing
// the leg. POSTGRES_PROBE=1 also probes the registry's `latest` when it is outside the range.
// PostgreSQL: the suite's global setup (embedded PostgreSQL 18, or DATABASE_URL).
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const TESTS = [
  'packages/core/test/postgres-adapter.contract.test.ts',
  'packages/core/test/core-smoke.contract.test.ts',
  // Where postgres.js versions behave apart (a statement it cannot build: 3.4.9 fails the active
  // query, 3.4.10 the statement alone): each test asserts its version's documented outcome.
  'test/regressions/client-side-build-errors.test.ts',
  'test/regressions/pipelined-round-two.test.ts',
  // postgres.js's internals and serializers the adapter relies on for values (round fifteen): a
  // Bind that failed after its description ends at its ReadyForQuery; sql.typed for untyped arrays;
  // the date and boolean serializers the adapter wraps.
  'test/regressions/round-fifteen/second-api/unserializable-value-twice.test.ts',
  'test/regressions/round-fifteen/second-api/arrays-of-booleans-and-dates.test.ts',
  'test/regressions/round-fifteen/second-api/date-parameters-as-text.test.ts',
  'test/regressions/round-fifteen/probe-migrate/boolean-parameters.test.ts',
]
// The files whose `postgres` must be the version under test: otherwise the run proves nothing.
const MUST_RESOLVE_FROM = ['packages/core/src/postgres-adapter.ts', 'test/support/database.ts']
// Each contract test takes well under a second; a probe's statements may never settle.
const PROBE_TIMEOUT = 5_000
const lockHash = () =>
  createHash('sha256')
    .update(readFileSync(join(repo, 'pnpm-lock.yaml')))
    .digest('hex')

function sh(cmd, args, options = {}) {
  return new Promise((done, fail) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...options }, (error, stdout, stderr) => {
      if (error) fail(new Error(`${[cmd, ...args].join(' ')} failed:\n${`${stdout}\n${stderr}`.trim()}`))
      else done(stdout.trim())
    })
  })
}

/** Versions of postgres on the registry matching `range`, oldest first. */
async function matching(range) {
  const out = await sh('npm', ['view', `postgres@${range}`, 'version', '--json'])
  const list = JSON.parse(out || '[]')
  return Array.isArray(list) ? list : [list]
}

/** The config vitest runs with: `postgres` resolved to `entry`, each resolution logged. */
function config(entry, log, testTimeout) {
  return `import { appendFileSync } from 'node:fs'
export default {
  root: ${JSON.stringify(repo)},
  plugins: [{
    name: 'postgres-under-test',
    enforce: 'pre',
    resolveId(source, importer) {
      if (source !== 'postgres') return null
      appendFileSync(${JSON.stringify(log)}, (importer ?? '') + '\\n')
      return ${JSON.stringify(entry)}
    },
  }],
  test: {
    include: ${JSON.stringify(TESTS)},
    globalSetup: [${JSON.stringify(join(repo, 'test/support/global-setup.ts'))}],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: ${testTimeout},
    hookTimeout: 60000,
    typecheck: { enabled: false },
  },
}
`
}

/** Installs `version`, runs the tests on it; resolves with { passed, failed, failures, error }. */
async function run(version, probe) {
  const work = mkdtempSync(join(tmpdir(), `fastify-pg-pool-postgres-${version}-`))
  try {
    writeFileSync(join(work, 'package.json'), JSON.stringify({ private: true, type: 'module' }))
    await sh(
      'npm',
      ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error', `postgres@${version}`],
      {
        cwd: work,
      },
    )
    const installed = JSON.parse(readFileSync(join(work, 'node_modules/postgres/package.json'), 'utf8')).version
    if (installed !== version) throw new Error(`npm installed postgres ${installed}, not ${version}`)
    // What `import 'postgres'` loads in Node (its ESM entry), resolved from the install.
    const entry = fileURLToPath(
      await sh(process.execPath, ['--input-type=module', '-e', "console.log(import.meta.resolve('postgres'))"], {
        cwd: work,
      }),
    )
    const log = join(work, 'resolved-from.log')
    const report = join(work, 'report.json')
    writeFileSync(join(work, 'vitest.config.mjs'), config(entry, log, probe ? PROBE_TIMEOUT : 30_000))
    const code = await new Promise((done) => {
      const child = spawn(
        join(repo, 'node_modules/.bin/vitest'),
        [
          'run',
          '--config',
          join(work, 'vitest.config.mjs'),
          '--reporter=default',
          '--reporter=json',
          `--outputFile.json=${report}`,
        ],
        // test/support/postgres-version.ts: which version the tests run on (their import of
        // 'postgres' goes to it; a require of its package.json would not).
        { cwd: repo, stdio: 'inherit', env: { ...process.env, POSTGRES_JS_VERSION: installed } },
      )
      child.on('exit', (status) => done(status ?? 1))
    })
    if (!existsSync(report)) throw new Error(`vitest exited with ${code} and no report`)
    const result = JSON.parse(readFileSync(report, 'utf8'))
    const importers = existsSync(log) ? readFileSync(log, 'utf8') : ''
    const missing = MUST_RESOLVE_FROM.filter((file) => !importers.includes(join(repo, file)))
    if (missing.length > 0) throw new Error(`postgres was not resolved to ${version} from ${missing.join(', ')}`)
    const failures = result.testResults.flatMap((file) =>
      file.assertionResults.filter((test) => test.status === 'failed').map((test) => test.fullName),
    )
    const broken = result.numRuntimeErrorTestSuites ?? 0
    return {
      passed: result.numPassedTests,
      failed: result.numFailedTests + broken,
      failures: broken ? [...failures, `${broken} test file(s) failed to run`] : failures,
    }
  } catch (error) {
    return { passed: 0, failed: 1, failures: [], error: error.message }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

const range = JSON.parse(readFileSync(join(repo, 'packages/core/package.json'), 'utf8')).dependencies.postgres
const lockBefore = lockHash()
const inRange = await matching(range)
if (inRange.length === 0) throw new Error(`no postgres version on the registry matches ${range}`)
const legs = []
if (process.env.POSTGRES_VERSIONS) {
  for (const version of process.env.POSTGRES_VERSIONS.split(',')) {
    legs.push({ version, probe: !inRange.includes(version) })
  }
} else {
  for (const version of new Set([inRange[0], inRange.at(-1)])) legs.push({ version, probe: false })
  if (process.env.POSTGRES_PROBE === '1') {
    const latest = await sh('npm', ['view', 'postgres', 'dist-tags.latest'])
    if (!inRange.includes(latest)) legs.push({ version: latest, probe: true })
  }
}
console.log(
  `core's postgres range: ${range}; versions: ${legs.map((l) => l.version + (l.probe ? ' (probe)' : '')).join(', ')}`,
)

let passed = 0
let failed = 0
const lines = []
for (const leg of legs) {
  console.log(
    `\n=== postgres.js ${leg.version}${leg.probe ? ' (probe: outside the range, does not fail the leg)' : ''}`,
  )
  const result = await run(leg.version, leg.probe)
  if (!leg.probe) {
    passed += result.passed
    failed += result.failed
  }
  const verdict = result.error
    ? `FAILED: ${result.error}`
    : result.failed === 0
      ? `ok (${result.passed} tests)`
      : `FAILED: ${result.failed} of ${result.passed + result.failed} tests`
  lines.push(`  postgres.js ${leg.version}${leg.probe ? ' (probe, outside the range)' : ''}: ${verdict}`)
  for (const name of result.failures) lines.push(`      ${name}`)
}
if (lockHash() !== lockBefore) {
  failed++
  lines.push('  pnpm-lock.yaml changed during the run: it must not')
}

console.log('\npostgres.js versions leg:')
for (const line of lines) console.log(line)
// .ci/run adds the tests to its closing count (.ci/summary.cjs reads vitest's JSON fields).
if (process.env.REPORT_JSON) {
  const report = { numPassedTests: passed, numFailedTests: failed, numPendingTests: 0, numTodoTests: 0 }
  writeFileSync(process.env.REPORT_JSON, JSON.stringify(report))
}
process.exit(failed ? 1 : 0)
