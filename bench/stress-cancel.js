// `node bench/stress-cancel.js`: issue 17 item 2's shape, for as many requests as asked. An app
// on the core (pool max 4) in a process of its own; 48 HTTP clients in a closed loop on real
// sockets, each abandoning 30 % of its requests after a random 1-6 ms (the socket destroyed);
// a plain route and a transaction route, each running a statement of a few ms. It counts, for
// the requests that were answered: statuses, bodies naming 57014, 500s; and it checks in the
// database that every 2xx of the transaction route committed its row. Exits 1 when a request
// nobody abandoned saw 57014 or a 500, or a 2xx insert is missing.
// pool.maxWaiting is 0 by default: a request that finds the 4 connections busy is refused at
// once, so an admitted one runs its statement at once and a hang-up 1-6 ms later lands on it
// (a cancel is sent). With a wait queue (STRESS_MAX_WAITING=192) 48 clients keep ~44 requests
// waiting, tens of ms each: the hang-ups land in the queue and no cancel is ever sent.
// Knobs: STRESS_REQUESTS (100000), STRESS_CLIENTS (48), STRESS_ABANDON (0.3), STRESS_POOL_MAX (4),
// STRESS_MAX_WAITING (0),
// STRESS_CORE (path to another core's dist/index.js, e.g. a worktree of an older commit),
// DATABASE_URL (else embedded PostgreSQL 18, as bench/run.js).
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath, pathToFileURL } from 'node:url'

const REQUESTS = Number(process.env.STRESS_REQUESTS ?? 100_000)
const CLIENTS = Number(process.env.STRESS_CLIENTS ?? 48)
const ABANDON = Number(process.env.STRESS_ABANDON ?? 0.3)
const POOL_MAX = Number(process.env.STRESS_POOL_MAX ?? 4)
const MAX_WAITING = Number(process.env.STRESS_MAX_WAITING ?? 0)
// The SQLSTATE in an error body (not a request id that happens to contain the digits).
const CANCELED = /"code":"57014"|canceling statement due to user request/
const ABANDON_MIN_MS = 1
const ABANDON_SPAN_MS = 5
const core = process.env.STRESS_CORE ? pathToFileURL(resolve(process.env.STRESS_CORE)).href : '@fastify-pg-pool/core'

/** The app under test, in a child process: its event loop is not the load generator's. */
async function serve() {
  const { default: Fastify } = await import('fastify')
  const { default: pgPoolCore } = await import(core)
  const app = Fastify({ logger: false })
  await app.register(pgPoolCore, {
    connection: process.env.STRESS_URL,
    pool: { max: POOL_MAX, maxWaiting: MAX_WAITING, acquireTimeout: 30_000 },
  })
  app.get('/plain', async (request) => {
    const [row] = await request.db`select pg_sleep(0.002 + random() * 0.003), ${request.query.id}::text as id`
    return { id: row.id }
  })
  app.post('/tx', { config: { db: { transaction: true } } }, async (request) => {
    await request.db`insert into fpp_stress_tx (run, request_id) values (${request.query.run}, ${request.query.id})`
    await request.db`select pg_sleep(0.002 + random() * 0.003)`
    return { id: request.query.id }
  })
  // What the handlers failed with, abandoned requests included (their replies go nowhere).
  const failures = {}
  app.addHook('onError', async (_request, _reply, error) => {
    const key = error.cause?.code ? `${error.code} (cause ${error.cause.code})` : String(error.code)
    failures[key] = (failures[key] ?? 0) + 1
  })
  app.get('/leased', async () => ({ leased: app.pgPool.stats().leased }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  process.send({ port: app.server.address().port })
  process.on('message', async (message) => {
    if (message !== 'close') return
    process.send({ failures })
    await app.close()
    process.exit(0)
  })
}

/**
 * One client: a keep-alive socket, one request at a time. `abandonAfterMs`: destroy the socket
 * that long after the request was written, unless the whole answer came first.
 */
class Client {
  #port
  #socket
  #pending
  #buffer = ''

  constructor(port) {
    this.#port = port
  }

  send(method, path, abandonAfterMs) {
    return new Promise((done) => {
      const socket = this.#socket ?? this.#connect()
      let timer
      if (abandonAfterMs !== undefined) {
        timer = setTimeout(() => {
          this.#pending = undefined
          this.#drop(socket)
          done({ abandoned: true })
        }, abandonAfterMs)
      }
      this.#pending = (result) => {
        clearTimeout(timer)
        done(result)
      }
      socket.write(`${method} ${path} HTTP/1.1\r\nHost: stress\r\nContent-Length: 0\r\n\r\n`)
    })
  }

  close() {
    this.#socket?.destroy()
  }

  #connect() {
    const socket = net.connect({ port: this.#port, host: '127.0.0.1', noDelay: true })
    socket.setEncoding('utf8')
    socket.on('data', (chunk) => this.#onData(socket, chunk))
    socket.on('error', () => {})
    socket.on('close', () => {
      if (this.#socket !== socket) return
      this.#drop(socket)
      const pending = this.#pending
      this.#pending = undefined
      pending?.({ abandoned: false, status: 0, body: 'connection closed by the server' })
    })
    this.#socket = socket
    this.#buffer = ''
    return socket
  }

  #drop(socket) {
    if (this.#socket === socket) this.#socket = undefined
    socket.destroy()
  }

  #onData(socket, chunk) {
    if (this.#socket !== socket) return
    this.#buffer += chunk
    const headerEnd = this.#buffer.indexOf('\r\n\r\n')
    if (headerEnd === -1) return
    const head = this.#buffer.slice(0, headerEnd)
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head)
    const start = headerEnd + 4
    let end
    if (length) {
      end = start + Number(length[1])
      if (Buffer.byteLength(this.#buffer.slice(start)) < Number(length[1])) return
    } else {
      const last = this.#buffer.indexOf('\r\n0\r\n\r\n', start)
      if (last === -1) return
      end = last + 7
    }
    const body = this.#buffer.slice(start, end)
    this.#buffer = this.#buffer.slice(end)
    const pending = this.#pending
    this.#pending = undefined
    if (/\r\nconnection:\s*close/i.test(head)) this.#drop(socket)
    pending?.({ abandoned: false, status: Number(head.slice(9, 12)), body })
  }
}

async function main() {
  const { startDatabase } = await import('./postgres.js')
  const database = await startDatabase()
  const { admin } = database
  await admin`create table if not exists fpp_stress_tx (run text not null, request_id text not null, primary key (run, request_id))`
  const run = randomBytes(4).toString('hex')
  const server = fork(fileURLToPath(import.meta.url), ['--serve'], {
    env: { ...process.env, STRESS_URL: database.url },
  })
  // Whatever ends this process ends the app too.
  process.on('exit', () => server.kill())
  const { port } = await new Promise((done, fail) => {
    server.once('message', done)
    server.once('exit', (code) => fail(new Error(`the app exited with ${code} before listening`)))
  })

  const counts = {
    plain: { abandoned: 0, answered: 0, statuses: new Map(), with57014: 0, status500: 0, samples: [] },
    tx: { abandoned: 0, answered: 0, statuses: new Map(), with57014: 0, status500: 0, samples: [] },
  }
  const txOk = new Set()
  const txNotOk = new Set()
  const txAbandoned = new Set()
  let next = 0
  let done = 0
  const started = performance.now()
  const worker = async () => {
    const client = new Client(port)
    while (next < REQUESTS) {
      const n = next++
      const route = Math.random() < 0.5 ? 'plain' : 'tx'
      const id = `${run}-${n}`
      const abandonAfter = Math.random() < ABANDON ? ABANDON_MIN_MS + Math.random() * ABANDON_SPAN_MS : undefined
      const path = route === 'plain' ? `/plain?id=${id}` : `/tx?run=${run}&id=${id}`
      const result = await client.send(route === 'plain' ? 'GET' : 'POST', path, abandonAfter)
      const c = counts[route]
      if (result.abandoned) {
        c.abandoned++
        if (route === 'tx') txAbandoned.add(id)
      } else {
        c.answered++
        c.statuses.set(result.status, (c.statuses.get(result.status) ?? 0) + 1)
        const canceled = CANCELED.test(result.body)
        if (canceled) c.with57014++
        if (result.status === 500) c.status500++
        if ((canceled || result.status === 500) && c.samples.length < 5) {
          c.samples.push(`${result.status} ${result.body}`)
        }
        if (route === 'tx') (result.status >= 200 && result.status < 300 ? txOk : txNotOk).add(id)
      }
      if (++done % 10_000 === 0) {
        const rate = done / ((performance.now() - started) / 1000)
        console.log(
          `  ${done} requests, ${rate.toFixed(0)}/s, 57014 so far: ${counts.plain.with57014 + counts.tx.with57014}`,
        )
      }
    }
    client.close()
  }
  console.log(
    `stress-cancel: ${REQUESTS} requests, ${CLIENTS} clients, pool max ${POOL_MAX} (maxWaiting ${MAX_WAITING}), ${ABANDON * 100} % abandoned after ${ABANDON_MIN_MS}-${ABANDON_MIN_MS + ABANDON_SPAN_MS} ms; core: ${core}; PostgreSQL ${database.version} (${database.kind})`,
  )
  await Promise.all(Array.from({ length: CLIENTS }, worker))
  const seconds = (performance.now() - started) / 1000

  // Every lease back (aborted transactions rolled back) before the rows are counted.
  for (let i = 0; i < 100; i++) {
    const answer = await fetch(`http://127.0.0.1:${port}/leased`).then((r) => r.json())
    if (answer.leased === 0) break
    await new Promise((r) => setTimeout(r, 100))
  }
  const rows = new Set((await admin`select request_id from fpp_stress_tx where run = ${run}`).map((r) => r.request_id))
  const missing = [...txOk].filter((id) => !rows.has(id)).length
  const committedNotOk = [...txNotOk].filter((id) => rows.has(id)).length
  const committedAbandoned = [...txAbandoned].filter((id) => rows.has(id)).length
  const { failures } = await new Promise((done) => {
    server.on('message', (message) => message.failures && done(message))
    server.send('close')
  })
  await new Promise((r) => server.once('exit', r))
  await admin`delete from fpp_stress_tx where run = ${run}`
  await database.stop()

  const statuses = (map) =>
    [...map]
      .sort(([a], [b]) => a - b)
      .map(([status, n]) => `${status} × ${n}`)
      .join(', ')
  console.log(`\ndone in ${seconds.toFixed(1)} s (${(REQUESTS / seconds).toFixed(0)} req/s)`)
  for (const [route, c] of Object.entries(counts)) {
    console.log(
      `${route === 'plain' ? 'GET /plain' : 'POST /tx (transaction)'}: ${c.answered} answered (${statuses(c.statuses)}), ${c.abandoned} abandoned`,
    )
    console.log(`  answered with 57014 in the body: ${c.with57014}; with status 500: ${c.status500}`)
    for (const sample of c.samples) console.log(`    e.g. ${sample}`)
  }
  const failed = Object.entries(failures).map(([code, n]) => `${code} × ${n}`)
  console.log(`errors in the app's handlers, abandoned requests included: ${failed.join(', ') || 'none'}`)
  // Both cores give an aborted request's statement that a cancel stopped FST_PG_POOL_ABORTED
  // with the 57014 as its cause: that many cancels landed on a statement of their own request.
  const cancelled = Object.entries(failures)
    .filter(([code]) => code.includes('cause 57014'))
    .reduce((sum, [, n]) => sum + n, 0)
  console.log(`statements of abandoned requests stopped by their cancel: ${cancelled}`)
  console.log(
    `transaction route: ${txOk.size} × 2xx, rows missing for them: ${missing}; rows committed for a non-2xx answer: ${committedNotOk}; for an abandoned request: ${committedAbandoned} of ${txAbandoned.size}`,
  )
  const bad = counts.plain.with57014 + counts.tx.with57014 + counts.plain.status500 + counts.tx.status500 + missing
  console.log(bad === 0 ? 'PASS: no 57014 or 500 on a request nobody abandoned, every 2xx insert committed' : 'FAIL')
  process.exit(bad === 0 ? 0 : 1)
}

// Last: the class above must be initialised before either runs.
if (process.argv[2] === '--serve') await serve()
else await main()
