import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../support/database.js'
import { firstBlock, fixtureDir, packageNames, pnpmProject, project, run, writeFiles } from './consumer-kit.js'

// Attacks that held: the packages as a stranger installs them (packed with pnpm, installed with
// plain npm outside the workspace: consumer-kit.ts), run against this file's own database.

let db: TestDatabase
const children = new Set<ChildProcess>()
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await db.drop()
})

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer().once('error', fail)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => done(typeof address === 'object' && address ? address.port : 0))
    })
  })
}

/** Starts `node file` in `cwd`, resolves once `probe` answers (any status); stops it on SIGTERM. */
async function serve(cwd: string, file: string, probe: string) {
  const port = await freePort()
  const child = spawn(process.execPath, [file], {
    cwd,
    env: { ...process.env, DATABASE_URL: db.url, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let output = ''
  child.stdout?.on('data', (chunk) => {
    output += chunk
  })
  child.stderr?.on('data', (chunk) => {
    output += chunk
  })
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)))
  const base = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    const gone = await Promise.race([exited, new Promise((done) => setTimeout(done, 100, 'waiting'))])
    if (gone !== 'waiting') throw new Error(`${file} exited (${gone}):\n${output}`)
    const answered = await fetch(`${base}${probe}`).catch(() => undefined)
    if (answered) break
    if (i > 600) throw new Error(`${file} did not answer ${probe}:\n${output}`)
  }
  const request = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${base}${path}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    })
    const text = await response.text()
    return { status: response.status, type: response.headers.get('content-type') ?? '', text }
  }
  const stop = async () => {
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const code = await exited
    clearTimeout(timer)
    children.delete(child)
    return code
  }
  return { request, stop, output: () => output }
}

/** The first ```js block of a package README, with `port: 3000` read from PORT (the one change). */
function readmeExample(pkg: string): string {
  const code = firstBlock(`packages/${pkg}/README.md`, 'js')
  expect(code).toContain('port: 3000')
  return code.replace('port: 3000', 'port: Number(process.env.PORT)')
}

const seed = `
import postgres from 'postgres'
const sql = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
await sql\`create table if not exists items (id int primary key, name text not null, stock int not null check (stock >= 0))\`
await sql\`insert into items values (1, 'apple', 10), (2, 'pear', 0) on conflict (id) do nothing\`
await sql.end()
`

describe('held: the packages at run time, as npm installs them', () => {
  test('each package README example runs as written (core, health, metrics, backpressure)', async () => {
    const dir = await project('runtime', { deps: ['fastify@^5.12.8', 'esbuild@^0.28.2'] })
    const fixture = fixtureDir(dir, 'readme-examples')
    writeFiles(fixture, {
      'seed.mjs': seed,
      'core.mjs': readmeExample('core'),
      'health.mjs': readmeExample('health'),
      'metrics.mjs': readmeExample('metrics'),
      'backpressure.mjs': readmeExample('backpressure'),
    })
    // The core example creates `items` itself; the others use the umbrella README's, created here.
    const core = await serve(fixture, 'core.mjs', '/items/1')
    expect((await core.request('GET', '/items/1')).status).toBe(404) // its own table is empty
    expect((await core.request('POST', '/move')).text).toBe('{"ok":true}')
    expect(await core.stop()).toBe(0)
    expect((await run(process.execPath, ['seed.mjs'], { cwd: fixture, env: { DATABASE_URL: db.url } })).code).toBe(0)

    const health = await serve(fixture, 'health.mjs', '/health/live')
    const ready = await health.request('GET', '/health/ready')
    expect([ready.status, ready.type.split(';')[0], JSON.parse(ready.text).status]).toEqual([
      200,
      'application/health+json',
      'pass',
    ])
    // Its SIGTERM handler closes the app: the process ends on its own, with 0.
    expect(await health.stop()).toBe(0)

    const metrics = await serve(fixture, 'metrics.mjs', '/metrics')
    expect(JSON.parse((await metrics.request('GET', '/items/1')).text)).toMatchObject({ id: 1, name: 'apple' })
    const scrape = await metrics.request('GET', '/metrics')
    expect(scrape.text).toContain('pg_pool_connections{pool="primary",state="idle"}')
    await metrics.stop()

    const backpressure = await serve(fixture, 'backpressure.mjs', '/items/1')
    expect((await backpressure.request('GET', '/reports')).status).toBe(200)
    expect(JSON.parse((await backpressure.request('POST', '/webhooks', { a: 1 })).text)).toEqual({ ok: true })
    await backpressure.stop()
  }, 180_000)

  test('fastify 5.0.0 (the lowest the peer range allows), npm --strict-peer-deps: the core README example runs', async () => {
    const dir = await project('fastify-5.0.0', { deps: ['fastify@5.0.0'], flags: ['--strict-peer-deps'] })
    const fixture = fixtureDir(dir, 'fastify-5.0.0')
    writeFiles(fixture, { 'core.mjs': readmeExample('core') })
    const core = await serve(fixture, 'core.mjs', '/items/1')
    // 404 on an empty table, 200 once the other test seeded it (one database per file).
    expect([200, 404]).toContain((await core.request('GET', '/items/1')).status)
    expect((await core.request('POST', '/move')).text).toBe('{"ok":true}')
    expect(await core.stop()).toBe(0)
    const installed = await run('npm', ['ls', 'fastify', '--json'], { cwd: dir })
    expect(JSON.parse(installed.stdout).dependencies.fastify.version).toBe('5.0.0')
  }, 300_000)

  // Fastify 5.0.0 has neither `handlerTimeout` nor `request.signal`, which the core reads when
  // present: a client that hangs up still stops the statement and frees the connection.
  test('fastify 5.0.0: a client hang-up stops the statement and returns the lease (GET, POST, transaction POST)', async () => {
    const dir = await project('fastify-5.0.0', { deps: ['fastify@5.0.0'], flags: ['--strict-peer-deps'] })
    const fixture = fixtureDir(dir, 'fastify-5.0.0-abort')
    writeFiles(fixture, {
      'abort.mjs': `
import Fastify from 'fastify'
import pgPoolCore from '@fastify-pg-pool/core'
import { request } from 'node:http'

const app = Fastify()
await app.register(pgPoolCore, { connection: process.env.DATABASE_URL, pool: { max: 1 } })
let started = 0
app.get('/slow', async (req) => { started++; return req.db\`select pg_sleep(30)\` })
app.post('/slow', async (req) => { started++; return req.db\`select pg_sleep(30)\` })
app.post('/slow-tx', { config: { db: { transaction: true } } }, async (req) => { started++; return req.db\`select pg_sleep(30)\` })
await app.listen({ port: 0, host: '127.0.0.1' })
const { port } = app.server.address()
const out = {}
for (const [method, path] of [['GET', '/slow'], ['POST', '/slow'], ['POST', '/slow-tx']]) {
  const before = started
  const client = request({ host: '127.0.0.1', port, method, path, headers: method === 'POST' ? { 'content-type': 'application/json' } : {} })
  client.on('error', () => {})
  if (method === 'POST') client.write('{"a":1}')
  client.end()
  while (started === before || app.pgPool.stats().leased === 0) await new Promise((done) => setTimeout(done, 10))
  client.destroy()
  // Well before pg_sleep(30) would end on its own.
  const deadline = Date.now() + 15_000
  while (app.pgPool.stats().leased > 0 && Date.now() < deadline) await new Promise((done) => setTimeout(done, 10))
  out[\`\${method} \${path}\`] = app.pgPool.stats().leased
}
console.log(JSON.stringify(out))
await app.close()
`,
    })
    const result = await run(process.execPath, ['abort.mjs'], {
      cwd: fixture,
      env: { DATABASE_URL: db.url },
      timeout: 90_000,
    })
    expect(result.code, result.output).toBe(0)
    expect(JSON.parse(result.stdout.trim())).toEqual({ 'GET /slow': 0, 'POST /slow': 0, 'POST /slow-tx': 0 })
  }, 180_000)

  // pnpm links each package's declared dependencies only: a package importing something it does
  // not declare (a workspace-only dependency) fails to load here. Every part is loaded: the
  // umbrella, its four parts and the otel part through its dynamic import.
  test('pnpm (strict node_modules), umbrella only: every part loads and serves, ESM and require()', async () => {
    const dir = await pnpmProject('umbrella', {
      fastify: '^5.12.8',
      typescript: '~5.9.3',
      '@types/node': '^20.19.43',
    })
    const fixture = fixtureDir(dir, 'pnpm-all-parts')
    writeFiles(fixture, {
      'app.mjs': `
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'

const app = Fastify()
await app.register(pgPool, { connection: process.env.DATABASE_URL, pool: { max: 2 }, otel: {} })
const ready = await app.inject('/health/ready')
const metrics = await app.inject('/metrics')
console.log(JSON.stringify({ ready: ready.statusCode, metrics: metrics.statusCode, otel: typeof app.pgPoolOtel }))
await app.close()
`,
      'app.cjs':
        "const m = require('fastify-pg-pool'); console.log(typeof m.default, typeof m.errors.FST_PG_POOL_CLOSED)\n",
    })
    const esm = await run(process.execPath, ['app.mjs'], {
      cwd: fixture,
      env: { DATABASE_URL: db.url },
      timeout: 60_000,
    })
    expect(esm.code, esm.output).toBe(0)
    expect(JSON.parse(esm.stdout.trim())).toEqual({ ready: 200, metrics: 200, otel: 'object' })
    const cjs = await run(process.execPath, ['app.cjs'], { cwd: fixture, timeout: 60_000 })
    expect([cjs.code, cjs.stdout.trim(), cjs.stderr]).toEqual([0, 'function function', ''])
  }, 300_000)

  test("package.json of each package is importable; deep imports are refused with Node's code; require() works", async () => {
    const dir = await project('runtime', { deps: ['fastify@^5.12.8', 'esbuild@^0.28.2'] })
    const fixture = fixtureDir(dir, 'exports')
    writeFiles(fixture, {
      'check.mjs': `
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const out = {}
for (const name of ${JSON.stringify(packageNames)}) {
  const manifest = (await import(\`\${name}/package.json\`, { with: { type: 'json' } })).default
  const deep = await import(\`\${name}/dist/index.js\`).then(() => 'loaded', (e) => e.code)
  const required = require(name)
  out[name] = { name: manifest.name, deep, default: typeof required.default, esModule: required.__esModule === true }
}
console.log(JSON.stringify(out))
`,
    })
    const result = await run(process.execPath, ['check.mjs'], { cwd: fixture })
    expect(result.code, result.output).toBe(0)
    const out = JSON.parse(result.stdout)
    for (const name of packageNames) {
      expect(out[name]).toEqual({ name, deep: 'ERR_PACKAGE_PATH_NOT_EXPORTED', default: 'function', esModule: true })
    }
  }, 300_000)
})
