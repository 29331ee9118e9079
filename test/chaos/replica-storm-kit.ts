import { Writable } from 'node:stream'
import pgPoolCore, { type LeaseDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import pgPool from 'fastify-pg-pool'
import postgres from 'postgres'
import { parseExposition } from '../metrics/exposition.js'
import { sleep, type TestDatabase, uniqueName } from '../support/database.js'
import { listen } from '../support/http.js'
import type { ReplicatedDatabase, ReplicationCluster } from '../support/replication.js'
import { type Rand, rand } from './chaos-kit.js'

// A seeded storm over what test/chaos does not combine: a default instance with a streaming
// replica and read-your-writes, a named instance `b` (another database of the same cluster, with
// its own replica and token header), a named instance `c` on the run's server (no replica), every
// route kind (plain, route transaction, begin(), pipelined, readOnly, readOnly pipelined, readOnly
// transaction, request.db.replica, a cursor), real HTTP clients that hang up (AbortController),
// handler timeouts, and faults at seeded moments: replay paused and resumed, the standby restarted,
// the app's backends on either server terminated.

export const SECRET = 'a-storm-secret-of-some-length'
export const HEADER_A = 'x-pg-read-after'
export const HEADER_B = 'x-pg-b-read-after'

export interface StormEnv {
  readonly cluster: ReplicationCluster
  readonly a: ReplicatedDatabase
  readonly b: ReplicatedDatabase
  readonly c: TestDatabase
}

export interface StormApp {
  readonly app: FastifyInstance
  readonly base: string
  readonly names: { a: string; b: string; c: string }
  readonly logs: Record<string, unknown>[]
  readonly fallbacks: string[]
  /** Per request id: what the marker read at the start of each exclusive lease was (must be empty). */
  readonly markers: Map<string, string[]>
  /** Server-side sockets, with the requests each carried (for a close that hangs). */
  readonly sockets: Map<
    import('node:net').Socket,
    { id: string; url: string; finished: boolean; closed: boolean; aborted: boolean }[]
  >
}

type Sql = LeaseDb

/** Reads the session's marker (must be unset: no other request's), then sets its own. */
async function mark(db: Sql, id: string, where: string, markers: Map<string, string[]>) {
  const [row] = await db<{ m: string | null }[]>`select current_setting('app.mark', true) as m`
  const seen = row?.m ?? ''
  if (seen !== '') markers.set(id, [...(markers.get(id) ?? []), `${where}:${seen}`])
  await db`select set_config('app.mark', ${id}, false)`
}

export async function stormApp(env: StormEnv, options: { max: number }): Promise<StormApp> {
  const logs: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line))
      callback()
    },
  })
  const names = { a: uniqueName('storm-a'), b: uniqueName('storm-b'), c: uniqueName('storm-c') }
  const app = Fastify({
    logger: { level: 'warn', stream },
    genReqId: (req) => String(req.headers['x-storm-id'] ?? 'anon'),
  })
  const pool = (applicationName: string) => ({
    max: options.max,
    applicationName,
    acquireTimeout: 5_000,
    statementTimeout: 5_000,
    connectTimeout: 2_000,
    closeTimeout: 2_000,
    pipelineDepth: 4,
  })
  await app.register(pgPool, {
    connection: env.a.primaryUrl,
    replicas: [env.a.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: SECRET, maxWait: 300 },
    },
    pool: pool(names.a),
    backpressure: false,
    health: {},
    metrics: { httpMetrics: true },
  })
  await app.register(pgPoolCore, {
    name: 'b',
    connection: env.b.primaryUrl,
    replicas: [env.b.standbyUrls[0] as string],
    replica: {
      lagInterval: 50,
      maxLag: { seconds: 600 },
      readYourWrites: { secret: SECRET, maxWait: 300, header: HEADER_B },
    },
    pool: pool(names.b),
  })
  await app.register(pgPoolCore, { name: 'c', connection: env.c.url, pool: pool(names.c) })
  const fallbacks: string[] = []
  app.pgPool.on('readFallback', (reason) => void fallbacks.push(reason))
  const markers = new Map<string, string[]>()

  type Req = FastifyRequest & { body: { tag: string; fail?: string; sleep?: number } }
  const body = (request: FastifyRequest) => (request as Req).body
  const fail = (request: FastifyRequest) => {
    if (body(request).fail === 'throw')
      throw Object.assign(new Error('storm-throw'), { statusCode: 500, code: 'STORM_THROW' })
  }
  const nap = async (request: FastifyRequest) => {
    const ms = body(request).sleep
    if (ms) await sleep(ms)
  }

  // Writes on the default instance.
  app.post('/a/w', async (request) => {
    await mark(request.db, request.id, 'a', markers)
    await nap(request)
    await request.db`insert into w (tag) values (${body(request).tag})`
    fail(request)
    return { ok: true }
  })
  app.post('/a/wtx', { config: { db: { transaction: true } } }, async (request) => {
    await mark(request.db, request.id, 'a', markers)
    await request.db`insert into w (tag) values (${body(request).tag})`
    await nap(request)
    fail(request)
    return { ok: true }
  })
  // Bodiless (Fastify 5 clears handlerTimeout once a body was read): the tag in the query.
  app.post('/a/wht', { config: { db: { transaction: true } }, handlerTimeout: 250 }, async (request) => {
    const q = request.query as { tag: string; sleep?: string }
    await mark(request.db, request.id, 'a', markers)
    await request.db`insert into w (tag) values (${q.tag})`
    await request.db`select pg_sleep(${Number(q.sleep ?? 0) / 1000})`
    return { ok: true }
  })
  app.post('/a/wbegin', async (request) => {
    await mark(request.db, request.id, 'a', markers)
    await request.db.begin(async (tx) => {
      await tx`insert into w (tag) values (${body(request).tag})`
      await nap(request)
    })
    fail(request)
    return { ok: true }
  })
  app.post('/a/wpipe', { config: { db: { pipeline: true } } }, async (request) => {
    await request.db`insert into w (tag) values (${body(request).tag})`
    fail(request)
    return { ok: true }
  })
  // Writes on both instances (two tokens on one reply).
  app.post('/ab/w', async (request) => {
    await mark(request.db, request.id, 'a', markers)
    await mark(request.dbs.b as Sql, request.id, 'b', markers)
    await request.db`insert into w (tag) values (${body(request).tag})`
    await nap(request)
    await (request.dbs.b as Sql)`insert into w (tag) values (${body(request).tag})`
    fail(request)
    return { ok: true }
  })
  app.post('/b/wtx', { config: { db: { transaction: true, instance: 'b' } } }, async (request) => {
    await mark(request.db, request.id, 'b', markers)
    await request.db`insert into w (tag) values (${body(request).tag})`
    await nap(request)
    fail(request)
    return { ok: true }
  })
  app.post('/c/w', async (request) => {
    await mark(request.dbs.c as Sql, request.id, 'c', markers)
    await (request.dbs.c as Sql)`insert into w (tag) values (${body(request).tag})`
    await nap(request)
    fail(request)
    return { ok: true }
  })
  app.post('/c/wtx', { config: { db: { transaction: true, instance: 'c' } } }, async (request) => {
    await mark(request.db, request.id, 'c', markers)
    await request.db`insert into w (tag) values (${body(request).tag})`
    await nap(request)
    fail(request)
    return { ok: true }
  })
  // A write then a replica read in the same request: documented to run on the primary connection.
  app.post('/a/wrep', async (request) => {
    await mark(request.db, request.id, 'a', markers)
    await request.db`insert into w (tag) values (${body(request).tag})`
    const replica = request.db.replica as Sql
    const [row] = await replica<
      { found: boolean }[]
    >`select exists (select from w where tag = ${body(request).tag}) as found`
    return { ok: true, sameRequestFound: row?.found }
  })

  // Reads.
  const tagOf = (request: FastifyRequest) => (request.params as { tag: string }).tag
  const readWith = async (db: Sql, tag: string) => {
    const [row] = await db<{ found: boolean; standby: boolean }[]>`
      select exists (select from w where tag = ${tag}) as found, pg_is_in_recovery() as standby`
    return row
  }
  app.get('/a/r/:tag', { config: { db: { readOnly: true } } }, async (request) => {
    await mark(request.db, request.id, 'a-read', markers)
    return readWith(request.db, tagOf(request))
  })
  app.get('/a/rp/:tag', { config: { db: { readOnly: true, pipeline: true } } }, async (request) =>
    readWith(request.db, tagOf(request)),
  )
  app.get('/a/rtx/:tag', { config: { db: { readOnly: true, transaction: true } } }, async (request) => {
    await mark(request.db, request.id, 'a-read', markers)
    return readWith(request.db, tagOf(request))
  })
  app.get('/a/rrep/:tag', async (request) => {
    await mark(request.db.replica as Sql, request.id, 'a-replica', markers)
    return readWith(request.db.replica as Sql, tagOf(request))
  })
  app.get('/a/rcur/:tag', { config: { db: { readOnly: true } } }, async (request) => {
    await mark(request.db, request.id, 'a-read', markers)
    let found = false
    let standby = false
    const tag = tagOf(request)
    for await (const rows of request.db<{ hit: boolean; standby: boolean }[]>`
      select g, exists (select from w where tag = ${tag}) as hit, pg_is_in_recovery() as standby
      from generate_series(1, 30) g`.cursor(7)) {
      for (const row of rows) {
        found ||= row.hit
        standby = row.standby
      }
    }
    return { found, standby }
  })
  app.get('/a/rht/:tag', { config: { db: { readOnly: true } }, handlerTimeout: 250 }, async (request) => {
    await mark(request.db, request.id, 'a-read', markers)
    const q = request.query as { sleep?: string }
    await request.db`select pg_sleep(${Number(q.sleep ?? 0) / 1000})`
    return readWith(request.db, tagOf(request))
  })
  app.get('/b/r/:tag', { config: { db: { readOnly: true, instance: 'b' } } }, async (request) => {
    await mark(request.db, request.id, 'b-read', markers)
    return readWith(request.db, tagOf(request))
  })
  app.get('/b/rrep/:tag', async (request) => readWith((request.dbs.b as Sql).replica as Sql, tagOf(request)))
  app.get('/c/r/:tag', { config: { db: { instance: 'c', pipeline: true } } }, async (request) =>
    readWith(request.db, tagOf(request)),
  )
  const sockets: StormApp['sockets'] = new Map()
  app.server.on('connection', (socket) => {
    sockets.set(socket, [])
    socket.on('close', () => sockets.delete(socket))
  })
  app.addHook('onRequest', async (request, reply) => {
    const entry = { id: request.id, url: request.url, finished: false, closed: false, aborted: false }
    sockets.get(request.raw.socket)?.push(entry)
    reply.raw.on('finish', () => {
      entry.finished = true
    })
    reply.raw.on('close', () => {
      entry.closed = true
    })
    request.raw.on('aborted', () => {
      entry.aborted = true
    })
  })
  await app.ready()
  const base = await listen(app)
  return { app, base, names, logs, fallbacks, markers, sockets }
}

// ---------------------------------------------------------------------------------------------
// Plans

export const WRITES = [
  '/a/w',
  '/a/wtx',
  '/a/wht',
  '/a/wbegin',
  '/a/wpipe',
  '/ab/w',
  '/b/wtx',
  '/c/w',
  '/c/wtx',
  '/a/wrep',
] as const
export type WriteRoute = (typeof WRITES)[number]
export const READS_A = ['/a/r', '/a/rp', '/a/rtx', '/a/rrep', '/a/rcur', '/a/rht'] as const
export const READS_B = ['/b/r', '/b/rrep'] as const

export interface Flow {
  readonly id: string
  readonly write: WriteRoute
  readonly fail: 'throw' | undefined
  readonly sleep: number
  /** The client hangs up on the write after this many ms. */
  readonly writeHangUp: number | undefined
  readonly reads: { route: string; hangUp: number | undefined; sleep: number }[]
  /** ms after the storm's start. */
  readonly at: number
}

export type Fault =
  | { at: number; kind: 'pause'; holdMs: number; node: 'a' }
  | { at: number; kind: 'restart-standby' }
  | { at: number; kind: 'outage'; holdMs: number }
  | { at: number; kind: 'terminate'; which: 'a' | 'a-standby' | 'b' | 'b-standby' | 'c' }

export interface Schedule {
  readonly seed: number
  readonly flows: Flow[]
  readonly faults: Fault[]
}

export function schedule(seed: number, flowCount: number, spanMs: number): Schedule {
  const r: Rand = rand(seed)
  const flows: Flow[] = []
  for (let i = 0; i < flowCount; i++) {
    const write = r.pick(WRITES)
    const reads: Flow['reads'] = []
    const readCount = r.int(1, 3)
    for (let k = 0; k < readCount; k++) {
      const pool: readonly string[] =
        write === '/b/wtx'
          ? READS_B
          : write === '/ab/w'
            ? [...READS_A, ...READS_B]
            : write.startsWith('/c')
              ? ['/c/r']
              : READS_A
      const route = r.pick(pool)
      reads.push({
        route,
        hangUp: r.chance(0.08) ? r.int(0, 60) : undefined,
        sleep: route === '/a/rht' ? r.int(0, 500) : 0,
      })
    }
    flows.push({
      id: `s${seed}-f${i}`,
      write,
      fail: write !== '/a/wht' && write !== '/a/wrep' && r.chance(0.15) ? 'throw' : undefined,
      sleep: write === '/a/wht' ? r.int(0, 500) : r.chance(0.3) ? r.int(1, 60) : 0,
      writeHangUp: r.chance(0.12) ? r.int(0, 60) : undefined,
      reads,
      at: Math.floor(r() * spanMs),
    })
  }
  flows.sort((x, y) => x.at - y.at)
  const faults: Fault[] = []
  for (let t = r.int(200, 600); t < spanMs; t += r.int(300, 1_200)) {
    const kind = r.weighted({ pause: 5, restart: 2, outage: 1, terminate: 4 })
    if (kind === 'pause') faults.push({ at: t, kind: 'pause', holdMs: r.int(100, 1_200), node: 'a' })
    else if (kind === 'restart') faults.push({ at: t, kind: 'restart-standby' })
    else if (kind === 'outage') faults.push({ at: t, kind: 'outage', holdMs: r.int(500, 2_000) })
    else faults.push({ at: t, kind: 'terminate', which: r.pick(['a', 'a-standby', 'b', 'b-standby', 'c'] as const) })
  }
  return { seed, flows, faults }
}

// ---------------------------------------------------------------------------------------------
// Running

export interface Exchange {
  readonly route: string
  readonly status: number | 'aborted' | 'error'
  readonly body: Record<string, unknown> | undefined
  readonly headers: Record<string, string>
  readonly error?: string
  readonly text?: string
}

export interface FlowResult {
  readonly flow: Flow
  readonly write: Exchange
  readonly reads: (Exchange & { sentA: boolean; sentB: boolean })[]
}

async function exchange(
  base: string,
  route: string,
  init: { method: 'GET' | 'POST'; body?: unknown; headers: Record<string, string>; hangUp: number | undefined },
): Promise<Exchange> {
  const controller = new AbortController()
  const timer = init.hangUp === undefined ? undefined : setTimeout(() => controller.abort(), init.hangUp)
  try {
    const res = await fetch(`${base}${route}`, {
      method: init.method,
      headers: { ...init.headers, ...(init.body ? { 'content-type': 'application/json' } : {}) },
      ...(init.body ? { body: JSON.stringify(init.body) } : {}),
      signal: controller.signal,
    })
    const text = await res.text()
    const headers: Record<string, string> = {}
    res.headers.forEach((v, k) => {
      headers[k] = v
    })
    let body: Record<string, unknown> | undefined
    try {
      body = JSON.parse(text)
    } catch {
      body = { raw: text }
    }
    return { route: route.split('?')[0] as string, status: res.status, body, headers, text }
  } catch (error) {
    if (controller.signal.aborted) return { route, status: 'aborted', body: undefined, headers: {} }
    return { route, status: 'error', body: undefined, headers: {}, error: String(error) }
  } finally {
    clearTimeout(timer)
  }
}

/** What each flow still waits for (its id -> the exchange and since when): for a hang's report. */
export const pending = new Map<string, { what: string; since: number }>()

export async function runFlow(base: string, flow: Flow, started: number): Promise<FlowResult> {
  const wait = flow.at - (Date.now() - started)
  if (wait > 0) await sleep(wait)
  pending.set(flow.id, { what: `write ${flow.write}`, since: Date.now() - started })
  const bodiless = flow.write === '/a/wht'
  const write = await exchange(base, bodiless ? `${flow.write}?tag=${flow.id}&sleep=${flow.sleep}` : flow.write, {
    method: 'POST',
    body: bodiless ? undefined : { tag: flow.id, ...(flow.fail ? { fail: flow.fail } : {}), sleep: flow.sleep },
    headers: { 'x-storm-id': `${flow.id}-w` },
    hangUp: flow.writeHangUp,
  })
  const reads: FlowResult['reads'] = []
  let k = 0
  for (const read of flow.reads) {
    const headers: Record<string, string> = { 'x-storm-id': `${flow.id}-r${k++}` }
    const tokenA = write.headers[HEADER_A]
    const tokenB = write.headers[HEADER_B]
    if (tokenA) headers[HEADER_A] = tokenA
    if (tokenB) headers[HEADER_B] = tokenB
    const query = read.sleep ? `?sleep=${read.sleep}` : ''
    pending.set(flow.id, {
      what: `read ${read.route} (token a ${headers[HEADER_A] !== undefined}, b ${headers[HEADER_B] !== undefined})`,
      since: Date.now() - started,
    })
    const result = await exchange(base, `${read.route}/${flow.id}${query}`, {
      method: 'GET',
      headers,
      hangUp: read.hangUp,
    })
    reads.push({ ...result, sentA: tokenA !== undefined, sentB: tokenB !== undefined })
  }
  pending.delete(flow.id)
  return { flow, write, reads }
}

export interface FaultLog {
  readonly fault: Fault
  readonly startedAt: number
  readonly endedAt: number
  readonly detail?: string
}

export async function runFaults(
  env: StormEnv,
  s: StormApp,
  faults: Fault[],
  started: number,
  stop: () => boolean,
): Promise<FaultLog[]> {
  const done: FaultLog[] = []
  const admins = {
    a: postgres(env.a.primaryUrl, { max: 1, onnotice: () => {} }),
    b: postgres(env.b.primaryUrl, { max: 1, onnotice: () => {} }),
  }
  try {
    for (const fault of faults) {
      if (stop()) break
      const wait = fault.at - (Date.now() - started)
      if (wait > 0) await sleep(wait)
      const startedAt = Date.now() - started
      let detail: string | undefined
      try {
        const { cluster } = env
        if (fault.kind === 'pause') {
          await cluster.pauseReplay(cluster.standby, { timeoutMs: 5_000 })
          await sleep(fault.holdMs)
          await cluster.resumeReplay(cluster.standby)
        } else if (fault.kind === 'restart-standby') {
          await cluster.standby.stop()
          await cluster.standby.start()
        } else if (fault.kind === 'outage') {
          await cluster.standby.stop()
          await sleep(fault.holdMs)
          await cluster.standby.start()
        } else {
          const which = fault.which
          if (which === 'c') detail = String(await env.c.terminate(s.names.c))
          else {
            const name = which.startsWith('a') ? s.names.a : s.names.b
            if (which.endsWith('standby')) {
              const url = which === 'a-standby' ? env.a.standbyUrls[0] : env.b.standbyUrls[0]
              const standby = postgres(url as string, { max: 1, onnotice: () => {}, connect_timeout: 2 })
              try {
                const [row] = await standby<{ n: number }[]>`
                  select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = ${name}`
                detail = String(row?.n)
              } finally {
                await standby.end({ timeout: 1 })
              }
            } else {
              const admin = which === 'a' ? admins.a : admins.b
              const [row] = await admin<{ n: number }[]>`
                select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = ${name}`
              detail = String(row?.n)
            }
          }
        }
      } catch (error) {
        detail = `fault failed: ${String(error)}`
      }
      done.push({ fault, startedAt, endedAt: Date.now() - started, ...(detail ? { detail } : {}) })
    }
  } finally {
    await admins.a.end({ timeout: 1 })
    await admins.b.end({ timeout: 1 })
  }
  return done
}

// ---------------------------------------------------------------------------------------------
// Checks

export interface Violation {
  readonly what: string
  readonly id?: string
  readonly detail?: unknown
}

const codeOf = (e: Exchange) => (e.body as { code?: string } | undefined)?.code

/** The write reached which tables (a, b, c), by what the route does. */
function tablesOf(route: WriteRoute): ('a' | 'b' | 'c')[] {
  if (route === '/ab/w') return ['a', 'b']
  if (route === '/b/wtx') return ['b']
  if (route.startsWith('/c')) return ['c']
  return ['a']
}

const TX: ReadonlySet<string> = new Set(['/a/wtx', '/a/wht', '/b/wtx', '/c/wtx'])

/** Codes that say the work was not committed. */
const NOT_COMMITTED = new Set(['FST_PG_POOL_COMMIT_FAILED', 'STORM_THROW_TX'])

export function checkFlows(results: FlowResult[], present: Record<'a' | 'b' | 'c', Set<string>>): Violation[] {
  const v: Violation[] = []
  for (const { flow, write, reads } of results) {
    const id = flow.id
    const status = write.status
    const code = codeOf(write)
    const tables = tablesOf(flow.write)
    const ok = typeof status === 'number' && status >= 200 && status < 300
    for (const t of tables) {
      const there = present[t].has(id)
      if (ok && !there) v.push({ what: `2xx write not in table ${t}`, id, detail: { write: flow.write, status } })
      if (there && TX.has(flow.write)) {
        // A transaction answered with a status that says it rolled back.
        const rolledBack =
          (typeof status === 'number' && status >= 400 && status < 500) ||
          (status === 500 && code !== 'FST_PG_POOL_COMMIT_UNKNOWN') ||
          code === 'FST_PG_POOL_COMMIT_FAILED' ||
          code === 'FST_ERR_HANDLER_TIMEOUT' ||
          code === 'STORM_THROW'
        if (rolledBack)
          v.push({ what: `transaction answered ${status} ${code} but committed (${t})`, id, detail: write })
      }
      if (there && code !== undefined && NOT_COMMITTED.has(code))
        v.push({ what: `row present, reply said not committed (${t})`, id, detail: write })
    }
    if (ok && flow.fail === 'throw') v.push({ what: 'a throwing handler answered 2xx', id })
    if (typeof status === 'number' && status >= 500 && code === undefined)
      v.push({ what: `write ${status} with no code`, id, detail: write.body })
    if (ok && flow.write === '/a/wrep' && (write.body as { sameRequestFound?: boolean }).sameRequestFound !== true)
      v.push({ what: 'same-request replica read missed its own write', id, detail: write.body })
    // Tokens: a 2xx write on a replicated instance carries its token.
    if (ok && tables.includes('a') && write.headers[HEADER_A] === undefined)
      v.push({ what: 'a 2xx write on a carries no token', id, detail: { route: flow.write, headers: write.headers } })
    if (ok && tables.includes('b') && write.headers[HEADER_B] === undefined)
      v.push({ what: 'a 2xx write on b carries no token', id, detail: { route: flow.write, headers: write.headers } })
    for (const read of reads) {
      const rs = read.status
      if (typeof rs !== 'number') continue
      const rcode = codeOf(read)
      if (rs >= 500 && rcode === undefined) v.push({ what: `read ${rs} with no code`, id, detail: read })
      if (rs !== 200) continue
      const found = (read.body as { found?: boolean }).found
      const isB = read.route.startsWith('/b')
      const isC = read.route.startsWith('/c')
      const sent = isB ? read.sentB : isC ? ok : read.sentA
      const table = isB ? 'b' : isC ? 'c' : 'a'
      if (sent && ok && found !== true)
        v.push({
          what: `read-your-writes miss on ${read.route}`,
          id,
          detail: { read: read.body, write: write.headers },
        })
      if (found === true && !present[table].has(id))
        v.push({ what: `read saw a row that is not committed (${table})`, id, detail: read.body })
    }
  }
  return v
}

/** pg_pool_http_request_duration_seconds counts per route, all status classes. */
export async function httpCounts(base: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const exposition = parseExposition(text)
  const counts: Record<string, number> = {}
  for (const sample of exposition.samples) {
    if (sample.name !== 'pg_pool_http_request_duration_seconds_count') continue
    const route = String(sample.labels.route)
    counts[route] = (counts[route] ?? 0) + Number(sample.value)
  }
  return counts
}

export function expectedCounts(results: FlowResult[]): Record<string, number> {
  const counts: Record<string, number> = {}
  const add = (route: string) => {
    counts[route] = (counts[route] ?? 0) + 1
  }
  for (const { flow } of results) {
    add(flow.write)
    for (const read of flow.reads) add(`${read.route}/:tag`)
  }
  return counts
}

export async function presentTags(env: StormEnv): Promise<Record<'a' | 'b' | 'c', Set<string>>> {
  const read = async (url: string) => {
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    try {
      return new Set((await sql<{ tag: string }[]>`select tag from w`).map((r) => r.tag))
    } finally {
      await sql.end({ timeout: 1 })
    }
  }
  return {
    a: await read(env.a.primaryUrl),
    b: await read(env.b.primaryUrl),
    c: new Set((await env.c.sql<{ tag: string }[]>`select tag from w`).map((r) => r.tag)),
  }
}

export async function backendsLeft(env: StormEnv, s: StormApp): Promise<Record<string, number>> {
  const count = async (url: string) => {
    const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 3 })
    try {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where application_name in (${s.names.a}, ${s.names.b})`
      return row?.n ?? 0
    } finally {
      await sql.end({ timeout: 1 })
    }
  }
  return {
    primary: await count(env.cluster.primary.url),
    standby: env.cluster.standby.running ? await count(env.cluster.standby.url) : -1,
    c: await env.c.countConnections(s.names.c),
  }
}

export function errorLines(s: StormApp): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const line of s.logs) {
    if (Number(line.level) < 50) continue
    const err = line.err as { code?: string; message?: string } | undefined
    const key = `${line.msg} ${err?.code ?? ''}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/**
 * Every response text that names a password or an address of a server, every log line that names a
 * password (addresses are the log's by design: core README, Errors).
 */
export function leaks(results: FlowResult[], s: StormApp, secrets: string[], passwords: string[]): Violation[] {
  const v: Violation[] = []
  const scan = (where: string, text: string, list = secrets) => {
    for (const secret of list)
      if (secret && text.includes(secret)) v.push({ what: `${where} holds ${secret}`, detail: text.slice(0, 400) })
  }
  for (const r of results) {
    scan(`reply of ${r.flow.write}`, r.write.text ?? '')
    for (const read of r.reads) scan(`reply of ${read.route}`, read.text ?? '')
  }
  for (const line of s.logs) scan('log line', JSON.stringify(line), passwords)
  return v
}

/** Polls /health/ready until `stop`: the statuses seen, with the output of each non-200. */
export async function pollHealth(
  base: string,
  stop: () => boolean,
): Promise<{ ok: number; bad: unknown[]; texts: string[] }> {
  const out = { ok: 0, bad: [] as unknown[], texts: [] as string[] }
  while (!stop()) {
    try {
      const res = await fetch(`${base}/health/ready`)
      const text = await res.text()
      out.texts.push(text)
      if (res.status === 200) out.ok++
      else out.bad.push({ status: res.status, body: JSON.parse(text) })
    } catch (error) {
      out.bad.push(String(error))
    }
    await sleep(150)
  }
  return out
}

/** pg_pool_read_fallbacks_total, summed over reasons, per pool. */
export async function fallbackCounts(base: string): Promise<Record<string, number>> {
  const exposition = parseExposition(await (await fetch(`${base}/metrics`)).text())
  const counts: Record<string, number> = {}
  for (const sample of exposition.find('pg_pool_read_fallbacks_total')) {
    const pool = String(sample.labels.pool)
    counts[pool] = (counts[pool] ?? 0) + sample.value
  }
  return counts
}
