// Held attacks (second round against 3837354, notCommitted/#routeOutcome): the pool ends a route
// transaction's lease exactly while the answer to its COMMIT is on the wire (the server
// committed; a proxy holds the CommandComplete until the abort happened, then lets it through
// within the pool's cancel grace). The client must get the handler's 200, not ABORTED/CLOSED:
// the transaction committed. Both held.
import { request as httpRequest } from 'node:http'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { coreApp } from '../../support/app.js'
import { sleep, waitFor, waitUntil } from '../../support/database.js'
import { listen } from '../../support/http.js'
import { noteTable } from '../../support/note-table.js'
import { type CommitAnswerProxy, startCommitAnswerProxy } from './commit-answer-proxy.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
let proxy: CommitAnswerProxy
beforeAll(async () => {
  proxy = await startCommitAnswerProxy(Number(new URL(fx.db.directUrl).port), new URL(fx.db.directUrl).hostname)
})
afterAll(() => proxy.close())

function post(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

test('app.close() past closeTimeout while the COMMIT answer is on the wire: 200, committed, outcome commit', async () => {
  fx.current = await coreApp(proxy.urlFor(fx.db.directUrl), { max: 2, closeTimeout: 1, pgbouncer: false })
  const { app } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  app.post('/t', tx, async (request) => {
    await request.db`insert into note values ('committed')`
    return { ok: true }
  })
  const base = await listen(app)
  let closing: Promise<unknown> | undefined
  proxy.holdCommitAnswer = async () => {
    closing = app.close()
    await waitUntil(() => !app.pgPool.stats().accepting, 'the pool to close')
    await sleep(20)
  }
  const answer = await post(`${base}/t`)
  await closing
  fx.current = undefined
  expect({ answer, rows: await fx.notes(), outcomes }).toEqual({
    answer: { status: 200, body: '{"ok":true}' },
    rows: ['committed'],
    outcomes: ['commit'],
  })
})

test('handlerTimeout fires while the COMMIT answer is on the wire: 200, committed, Fastify timeout reply dropped', async () => {
  fx.current = await coreApp(proxy.urlFor(fx.db.directUrl), { max: 2, pgbouncer: false })
  const { app } = fx.current
  const outcomes: string[] = []
  app.pgPool.on('transaction', (outcome: string) => void outcomes.push(outcome))
  let aborted = false
  app.post('/t', { ...tx, handlerTimeout: 200 }, async (request) => {
    request.signal.addEventListener('abort', () => {
      aborted = true
    })
    await request.db`insert into note values ('committed')`
    return { ok: true }
  })
  const base = await listen(app)
  proxy.holdCommitAnswer = async () => {
    await waitUntil(() => aborted, 'the handler timeout')
    await sleep(20)
  }
  const answer = await post(`${base}/t`)
  expect(await waitFor(() => app.pgPool.stats().leased === 0, 5_000)).toBe(true)
  expect({ answer, rows: await fx.notes(), outcomes }).toEqual({
    answer: { status: 200, body: '{"ok":true}' },
    rows: ['committed'],
    outcomes: ['commit'],
  })
})
