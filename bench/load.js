// Load generators and the numbers taken from them.
import http from 'node:http'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { percentile } from './stats.js'

const HEADER_END = Buffer.from('\r\n\r\n')
const CHUNKED_END = Buffer.from('\r\n0\r\n\r\n')

/**
 * HTTP/1.1 keep-alive GETs over plain sockets, one request in flight per socket, a new socket
 * when none is idle (at most `maxSockets`; past that requests wait in the client). node:http's
 * client cost the open-loop generator ~370 µs of CPU per request here, a third of one of the
 * machine's two cores at 1000 req/s, taken from the server and PostgreSQL it measures; this one
 * parses only the status line and the body's length.
 */
class Client {
  #host
  #port
  #request
  #idle = []
  #queued = []
  #open = new Set()
  #maxSockets

  constructor(url, maxSockets) {
    const { hostname, port, pathname, search } = new URL(url)
    this.#host = hostname
    this.#port = Number(port)
    this.#request = Buffer.from(`GET ${pathname}${search} HTTP/1.1\r\nHost: ${hostname}:${port}\r\n\r\n`)
    this.#maxSockets = maxSockets
  }

  /** Resolves with the status (0: the connection failed) and the ms since the call. */
  get() {
    return new Promise((resolve) => {
      const request = { resolve, sentAt: performance.now() }
      const conn = this.#idle.pop() ?? (this.#open.size < this.#maxSockets ? this.#connect() : undefined)
      if (conn === undefined) this.#queued.push(request)
      else this.#send(conn, request)
    })
  }

  destroy() {
    for (const conn of this.#open) conn.socket.destroy()
  }

  #connect() {
    const conn = {
      socket: net.connect({ host: this.#host, port: this.#port, noDelay: true }),
      pending: undefined,
      buffered: undefined,
    }
    this.#open.add(conn)
    conn.socket.on('data', (chunk) => this.#onData(conn, chunk))
    conn.socket.on('error', () => conn.socket.destroy())
    conn.socket.on('close', () => {
      this.#open.delete(conn)
      const at = this.#idle.indexOf(conn)
      if (at !== -1) this.#idle.splice(at, 1)
      const pending = conn.pending
      conn.pending = undefined
      if (pending !== undefined) pending.resolve({ status: 0, ms: performance.now() - pending.sentAt })
      const next = this.#queued.shift()
      if (next !== undefined) this.#send(this.#connect(), next)
    })
    return conn
  }

  #send(conn, request) {
    conn.pending = request
    conn.socket.write(this.#request)
  }

  #onData(conn, chunk) {
    const data = conn.buffered === undefined ? chunk : Buffer.concat([conn.buffered, chunk])
    const headerEnd = data.indexOf(HEADER_END)
    if (headerEnd === -1) {
      conn.buffered = data
      return
    }
    const head = data.toString('latin1', 0, headerEnd).toLowerCase()
    const lengthAt = head.indexOf('\r\ncontent-length:')
    let complete = true
    if (lengthAt !== -1) {
      complete = data.length >= headerEnd + 4 + Number.parseInt(head.slice(lengthAt + 17), 10)
    } else if (head.includes('\r\ntransfer-encoding: chunked')) {
      complete =
        data.indexOf(CHUNKED_END, headerEnd) !== -1 || data.indexOf('0\r\n\r\n', headerEnd + 4) === headerEnd + 4
    }
    if (!complete) {
      conn.buffered = data
      return
    }
    conn.buffered = undefined
    const status = Number.parseInt(head.slice(9, 12), 10)
    const pending = conn.pending
    conn.pending = undefined
    if (head.includes('\r\nconnection: close')) conn.socket.end()
    else {
      const next = this.#queued.shift()
      if (next !== undefined) this.#send(conn, next)
      else this.#idle.push(conn)
    }
    pending?.resolve({ status, ms: performance.now() - pending.sentAt })
  }
}

/**
 * Open loop: requests leave at a fixed rate whatever the answers, as real users arrive.
 * Latency is taken from the moment a request was due, so a generator that falls behind or a
 * client-side socket queue counts against the server (no coordinated omission); the lag of the
 * generator itself is reported too. Requests still unanswered `graceMs` after the last one was
 * sent are cut and counted as unanswered.
 */
export async function openLoop({ url, rate, durationMs, graceMs = 2_000 }) {
  const client = new Client(url, 1024)
  const total = Math.round((rate * durationMs) / 1000)
  const results = []
  const lags = []
  const pending = new Set()
  const start = performance.now()
  let sent = 0
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now()
      const due = Math.min(total, Math.floor(((now - start) * rate) / 1000) + 1)
      while (sent < due) {
        const dueAt = start + (sent * 1000) / rate
        lags.push(now - dueAt)
        const request = client.get().then(({ status, ms }) => {
          const at = performance.now()
          results.push({ status, ms: at - dueAt, sentMs: ms, inWindow: at - start <= durationMs })
          pending.delete(request)
        })
        pending.add(request)
        sent++
      }
      if (sent < total) setTimeout(tick, 1)
      else resolve()
    }
    tick()
  })
  const sentDone = performance.now()
  await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, graceMs))])
  const unanswered = pending.size
  client.destroy()
  const windowS = (sentDone - start) / 1000
  return summarize(results, { offered: total, unanswered, windowS, lagP99: percentile(lags, 99) })
}

/**
 * Closed loop with autocannon: each connection sends its next request as soon as the previous
 * one is answered (a 503 included: that is the retry storm).
 */
export async function closedLoop({ url, connections, durationMs, paths }) {
  const results = []
  const instance = autocannon({
    url,
    connections,
    duration: durationMs / 1000,
    requests: paths ? [{ setupRequest: (req) => ({ ...req, path: paths() }) }] : undefined,
  })
  instance.on('response', (_client, status, _bytes, ms) => {
    results.push({ status, ms })
  })
  const totals = await instance
  return summarize(results, {
    offered: results.length,
    unanswered: 0,
    windowS: durationMs / 1000,
    errors: totals.errors + totals.timeouts,
  })
}

function summarize(results, extra) {
  const ok = []
  const refused = []
  let other = 0
  let okWithin1s = 0
  for (const { status, ms, sentMs = ms, inWindow = true } of results) {
    if (status >= 200 && status < 300) {
      ok.push(ms)
      if (ms <= 1000 && inWindow) okWithin1s++
    } else if (status === 503) refused.push(sentMs)
    else other++
  }
  const s = extra.windowS
  return {
    ...extra,
    answered: results.length,
    ok: ok.length,
    refused: refused.length,
    other,
    okPerS: ok.length / s,
    goodput: okWithin1s / s,
    ok50: percentile(ok, 50),
    ok90: percentile(ok, 90),
    ok99: percentile(ok, 99),
    refused99: percentile(refused, 99),
    // Every answer's latency from when the generator issued the request, whatever its status.
    sent99: percentile(
      results.map((x) => x.sentMs ?? x.ms),
      99,
    ),
  }
}

/** Polls `path` every `everyMs` over its own connection until stopped; keeps latencies and bodies. */
export function sampler(url, everyMs, read = () => undefined) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const latencies = []
  const values = []
  let failures = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const sentAt = performance.now()
      const value = await new Promise((resolve) => {
        const req = http.get(url, { agent, timeout: 2_000 }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk) => {
            body += chunk
          })
          res.on('end', () => resolve(res.statusCode === 200 ? read(body) : Symbol.for('fail')))
        })
        req.on('timeout', () => req.destroy())
        req.on('error', () => resolve(Symbol.for('fail')))
      })
      latencies.push(performance.now() - sentAt)
      if (value === Symbol.for('fail')) failures++
      else if (value !== undefined) values.push(value)
      await new Promise((resolve) => setTimeout(resolve, everyMs))
    }
  })()
  return async () => {
    stopped = true
    await loop
    agent.destroy()
    return { latencies, values, failures, max: latencies.length ? Math.max(...latencies) : Number.NaN }
  }
}
