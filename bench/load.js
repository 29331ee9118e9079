// Load generators and the numbers taken from them.
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import autocannon from 'autocannon'

export function percentile(values, p) {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

function get(agent, url) {
  const sentAt = performance.now()
  return new Promise((resolve) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - sentAt }))
      res.on('error', () => resolve({ status: 0, ms: performance.now() - sentAt }))
    })
    req.on('error', () => resolve({ status: 0, ms: performance.now() - sentAt }))
  })
}

/**
 * Open loop: requests leave at a fixed rate whatever the answers, as real users arrive.
 * Latency is taken from the moment a request was due, so a generator that falls behind or a
 * client-side socket queue counts against the server (no coordinated omission); the lag of the
 * generator itself is reported too. Requests still unanswered `graceMs` after the last one was
 * sent are cut and counted as unanswered.
 */
export async function openLoop({ url, rate, durationMs, graceMs = 2_000 }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 })
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
        const request = get(agent, url).then(({ status, ms }) => {
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
  agent.destroy()
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
