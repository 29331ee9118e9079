#!/usr/bin/env node
// The consumer leg: what a stranger gets from the registry. Packs every package with pnpm (as
// `pnpm publish -r` would), installs the tarballs with npm into a project outside the workspace
// (fastify and the tools come from the registry), then checks, each reported by name:
//   (a) the README's example, exactly as written, runs against PostgreSQL and answers its routes,
//       /health, /health/ready and /metrics, and exits 0 on SIGTERM;
//   (b) it type-checks with tsc --strict --module nodenext --moduleResolution nodenext;
//   (c) a CommonJS file require()s the umbrella and the four packages;
//   (d) esbuild bundles it (platform node, ESM, everything inside) and the bundle runs as (a);
//   (e) esbuild bundles examples/basic's app (src/app.js) the same way and the bundle answers its
//       routes, the transaction's commit and its rollback on a failed check included.
// PostgreSQL: DATABASE_URL when set (its user needs CREATEDB), else embedded PostgreSQL 18 from
// the workspace; one database per check, dropped after. The temporary directory is removed.
import { execFile, spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import postgres from 'postgres'
import { startDatabase } from '../../examples/basic/src/database.js'
import { publishablePackages } from './workspace-packages.mjs'

const PNPM = 'pnpm@10.34.8'
const CHECKS = {
  run: '(a) README example runs against PostgreSQL',
  types: '(b) README example type-checks (tsc --strict --module nodenext)',
  require: '(c) require() from CommonJS',
  bundle: '(d) esbuild bundle of the README example runs',
  example: '(e) esbuild bundle of examples/basic runs',
}
// Hang guards only: every wait below ends as soon as its event happens.
const START_LIMIT = 120_000
const EXIT_LIMIT = 60_000

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const work = mkdtempSync(join(tmpdir(), 'fastify-pg-pool-consumer-'))
const results = new Map()
const children = new Set()
let database
let admin
const databases = []

function sh(cmd, args, options = {}) {
  return new Promise((done, fail) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...options }, (error, stdout, stderr) => {
      if (error) fail(new Error(`${[cmd, ...args].join(' ')} failed:\n${`${stdout}\n${stderr}`.trim()}`))
      else done(stdout)
    })
  })
}

/** The first ```ts block of a markdown file. */
function example(file) {
  const match = /^```ts\n([\s\S]*?)^```$/m.exec(readFileSync(join(repo, file), 'utf8'))
  if (!match) throw new Error(`${file} has no \`\`\`ts code block`)
  return match[1]
}

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer().once('error', fail)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => done(port))
    })
  })
}

async function createDatabase(name) {
  await admin`drop database if exists ${admin(name)}`
  await admin`create database ${admin(name)}`
  databases.push(name)
  const url = new URL(database.url)
  url.pathname = `/${name}`
  return url.href
}

/** Starts a server process and resolves once GET /health/live answers 200. */
async function startServer(command, args, { cwd, env }) {
  const port = await freePort()
  // A process group of its own: tsx runs the app in a child process, and a hung run is ended whole.
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env, PORT: String(port) }, detached: true })
  children.add(child)
  let output = ''
  child.stdout.on('data', (chunk) => {
    output += chunk
  })
  child.stderr.on('data', (chunk) => {
    output += chunk
  })
  const exited = new Promise((done) => child.once('exit', (code, signal) => done({ code, signal })))
  child.exited = exited
  child.output = () => output
  const base = `http://localhost:${port}`
  const deadline = Date.now() + START_LIMIT
  for (;;) {
    const gone = await Promise.race([exited, new Promise((done) => setTimeout(done, 200, undefined))])
    if (gone) throw new Error(`exited at start (code ${gone.code}, signal ${gone.signal}):\n${tail(output)}`)
    const live = await fetch(`${base}/health/live`).catch(() => undefined)
    if (live?.status === 200) return { child, base }
    if (Date.now() > deadline) throw new Error(`/health/live did not answer within ${START_LIMIT} ms:\n${tail(output)}`)
  }
}

function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL')
  } catch {}
}

/** SIGTERM, then the exit code: the README's example closes the app on SIGTERM. */
async function stopServer(child) {
  // To the process only: tsx passes it on, and a second SIGTERM would end the app at once.
  child.kill('SIGTERM')
  const timer = setTimeout(() => killGroup(child), EXIT_LIMIT)
  const { code, signal } = await child.exited
  clearTimeout(timer)
  children.delete(child)
  if (code !== 0) {
    throw new Error(`on SIGTERM it exited with code ${code}, signal ${signal} (expected 0):\n${tail(child.output())}`)
  }
}

function tail(text, lines = 30) {
  return text.trim().split('\n').slice(-lines).join('\n')
}

async function expectJson(base, method, path, status, body) {
  const response = await fetch(`${base}${path}`, { method })
  const text = await response.text()
  if (response.status !== status)
    throw new Error(`${method} ${path}: expected ${status}, got ${response.status} ${text}`)
  if (body === undefined) return text
  const parsed = JSON.parse(text)
  for (const [key, value] of Object.entries(body)) {
    if (parsed[key] !== value) throw new Error(`${method} ${path}: expected ${key} ${JSON.stringify(value)} in ${text}`)
  }
  return parsed
}

/** Runs the routes' checks, then stops the server; the first failure is the one reported. */
async function exerciseAndStop(child, base, routes = exercise) {
  let failure
  try {
    await routes(base)
  } catch (error) {
    failure = error
  }
  try {
    await stopServer(child)
  } catch (error) {
    failure ??= error
  }
  if (failure) throw failure
}

/** examples/basic's routes (src/app.js), through HTTP. */
async function exerciseExample(base) {
  const items = await expectJson(base, 'GET', '/items', 200)
  if (JSON.parse(items).length !== 3) throw new Error(`GET /items: expected the 3 seeded items, got ${items}`)
  await expectJson(base, 'GET', '/items/1', 200, { id: 1, name: 'apple' })
  await expectJson(base, 'GET', '/items/9', 404)
  await expectJson(base, 'POST', '/items/1/move/2', 200, { moved: 1, left: 9 })
  // plum has none: the stock check fails (23514) and the first update is rolled back
  await expectJson(base, 'POST', '/items/3/move/1', 409, { code: '23514' })
  await expectJson(base, 'GET', '/items/1', 200, { stock: 9 })
  for (const path of ['/health/ready', '/metrics']) await expectJson(base, 'GET', path, 200)
}

/** The README example's routes and the suite's, through HTTP. */
async function exercise(base) {
  await expectJson(base, 'GET', '/items/1', 200, { id: 1, name: 'apple', stock: 10 })
  await expectJson(base, 'GET', '/items/3', 404, { message: 'no such item' })
  await expectJson(base, 'GET', '/items/abc', 400)
  await expectJson(base, 'POST', '/items/1/move/2', 200, { moved: 1, left: 9 })
  await expectJson(base, 'POST', '/items/2/move/1', 200, { moved: 1, left: 0 })
  // pear has none left: the stock check fails (23514, 409) and the update of apple is rolled back
  await expectJson(base, 'POST', '/items/2/move/1', 409, { code: '23514' })
  await expectJson(base, 'GET', '/items/1', 200, { stock: 10 })
  // a 404 reply without a throw rolls back too
  await expectJson(base, 'POST', '/items/1/move/3', 404)
  await expectJson(base, 'GET', '/items/1', 200, { stock: 10 })

  for (const path of ['/health', '/health/ready', '/health/live']) {
    const response = await fetch(`${base}${path}`)
    const text = await response.text()
    const type = response.headers.get('content-type') ?? ''
    if (response.status !== 200 || !type.startsWith('application/health+json') || JSON.parse(text).status !== 'pass') {
      throw new Error(
        `GET ${path}: expected 200 application/health+json "pass", got ${response.status} ${type} ${text}`,
      )
    }
  }
  const metrics = await fetch(`${base}/metrics`)
  const text = await metrics.text()
  const wanted = [
    'pg_pool_connections{pool="primary",state="idle"}',
    'pg_pool_lease_seconds_count{pool="primary",route="/items/:from/move/:to"}',
  ]
  if (metrics.status !== 200 || !(metrics.headers.get('content-type') ?? '').startsWith('text/plain')) {
    throw new Error(
      `GET /metrics: expected 200 text/plain, got ${metrics.status} ${metrics.headers.get('content-type')}`,
    )
  }
  for (const series of wanted) {
    if (!text.includes(series)) throw new Error(`GET /metrics: no ${series} in:\n${tail(text, 15)}`)
  }
}

async function check(key, fn) {
  try {
    await fn()
    results.set(key, { ok: true })
  } catch (error) {
    results.set(key, { ok: false, reason: error.message })
  }
}

async function cleanUp() {
  for (const child of children) killGroup(child)
  if (admin) {
    for (const name of databases) await admin`drop database if exists ${admin(name)} with (force)`.catch(() => {})
    await admin.end({ timeout: 5 })
  }
  await database?.stop().catch(() => {})
  rmSync(work, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => cleanUp().finally(() => process.exit(1)))
}

try {
  const packs = join(work, 'packs')
  const app = join(work, 'app')
  const bundle = join(work, 'bundle')
  mkdirSync(app)
  mkdirSync(bundle)

  // Setup: a failure here fails every check, with the reason.
  const code = example('README.md')
  if (example('packages/fastify-pg-pool/README.md') !== code) {
    throw new Error(
      'the examples of README.md and packages/fastify-pg-pool/README.md differ: they must be the same code',
    )
  }
  writeFileSync(join(app, 'server.ts'), code)
  for (const { dir } of publishablePackages(repo)) {
    await sh('npx', ['-y', PNPM, 'pack', '--pack-destination', packs], { cwd: join(repo, 'packages', dir) })
  }
  const tarballs = readdirSync(packs).map((file) => join(packs, file))
  console.log(`packed: ${readdirSync(packs).join(', ')}`)
  copyFileSync(join(repo, 'test/consumer/package.json'), join(app, 'package.json'))
  copyFileSync(join(repo, 'test/consumer/require-umbrella.cjs'), join(app, 'require-umbrella.cjs'))
  await sh('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: app })
  console.log(`installed into ${app} with npm`)

  database = await startDatabase({ info: () => {} })
  admin = postgres(database.url, { max: 1, onnotice: () => {} })
  console.log(process.env.DATABASE_URL ? 'database: DATABASE_URL' : 'database: embedded PostgreSQL')

  await check('run', async () => {
    const url = await createDatabase(`fpp_consumer_run_${process.pid}`)
    // Node >= 22.18 (and 23.6) runs TypeScript as is; before that the README says npx tsx.
    const [major, minor] = process.versions.node.split('.').map(Number)
    const strips = major >= 24 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18)
    const [command, args] = strips
      ? [process.execPath, ['server.ts']]
      : [join(app, 'node_modules/.bin/tsx'), ['server.ts']]
    const { child, base } = await startServer(command, args, { cwd: app, env: { DATABASE_URL: url } })
    await exerciseAndStop(child, base)
  })

  await check('types', async () => {
    await sh(
      join(app, 'node_modules/.bin/tsc'),
      ['--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--noEmit', 'server.ts'],
      { cwd: app },
    )
  })

  await check('require', async () => {
    const url = await createDatabase(`fpp_consumer_require_${process.pid}`)
    const out = await sh(process.execPath, ['require-umbrella.cjs'], {
      cwd: app,
      env: { ...process.env, DATABASE_URL: url },
    })
    console.log(out.trim())
  })

  await check('bundle', async () => {
    const url = await createDatabase(`fpp_consumer_bundle_${process.pid}`)
    await sh(
      join(app, 'node_modules/.bin/esbuild'),
      [
        'server.ts',
        '--bundle',
        '--platform=node',
        '--format=esm',
        `--outfile=${join(bundle, 'server.mjs')}`,
        '--log-level=warning',
        // Fastify and its dependencies are CommonJS: in an ESM bundle, their require() of Node's
        // own modules needs a real require (esbuild's documented banner). It finds no package:
        // the bundle runs from a directory with no node_modules.
        "--banner:js=import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
      ],
      { cwd: app },
    )
    console.log(`bundle: ${readdirSync(bundle).join(', ')}`)
    const { child, base } = await startServer(process.execPath, ['server.mjs'], {
      cwd: bundle,
      env: { DATABASE_URL: url },
    })
    await exerciseAndStop(child, base)
  })

  await check('example', async () => {
    const url = await createDatabase(`fpp_consumer_example_${process.pid}`)
    // examples/basic's app as it is, behind a small entry (its server.js also starts an embedded
    // PostgreSQL, whose native binaries are not bundled: DATABASE_URL here).
    copyFileSync(join(repo, 'examples/basic/src/app.js'), join(app, 'example-app.js'))
    writeFileSync(
      join(app, 'example-server.mjs'),
      [
        "import { buildApp } from './example-app.js'",
        'const app = await buildApp({ connection: process.env.DATABASE_URL, logger: false })',
        "process.once('SIGTERM', () => app.close().then(() => process.exit(0)))",
        'await app.listen({ port: Number(process.env.PORT) })',
        '',
      ].join('\n'),
    )
    await sh(
      join(app, 'node_modules/.bin/esbuild'),
      [
        'example-server.mjs',
        '--bundle',
        '--platform=node',
        '--format=esm',
        `--outfile=${join(bundle, 'example.mjs')}`,
        '--log-level=warning',
        "--banner:js=import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
      ],
      { cwd: app },
    )
    const { child, base } = await startServer(process.execPath, ['example.mjs'], {
      cwd: bundle,
      env: { DATABASE_URL: url },
    })
    await exerciseAndStop(child, base, exerciseExample)
  })
} catch (error) {
  for (const key of Object.keys(CHECKS)) {
    if (!results.has(key)) results.set(key, { ok: false, reason: `setup failed: ${error.message}` })
  }
} finally {
  await cleanUp()
}

let failed = 0
console.log('\nconsumer leg:')
for (const [key, name] of Object.entries(CHECKS)) {
  const result = results.get(key)
  if (result.ok) {
    console.log(`  ${name}: ok`)
  } else {
    failed++
    console.log(`  ${name}: FAILED: ${result.reason.replace(/\n/g, '\n      ')}`)
  }
}
const total = Object.keys(CHECKS).length
// .ci/run adds the checks to its closing count (.ci/summary.cjs reads vitest's JSON fields).
if (process.env.REPORT_JSON) {
  const report = { numPassedTests: total - failed, numFailedTests: failed, numPendingTests: 0, numTodoTests: 0 }
  writeFileSync(process.env.REPORT_JSON, JSON.stringify(report))
}
console.log(
  failed ? `consumer leg FAILED: ${failed} of ${total} checks failed` : `consumer leg ok: ${total} of ${total} checks`,
)
process.exit(failed ? 1 : 0)
