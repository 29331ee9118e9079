// What the user does: registers an onRequest hook of their own that takes a while before it
// answers or lets the request on (an authentication call, a rate limiter, admission control
// holding a refusal during a retry storm), then the metrics plugin, and watches the aborted
// rate: pg_pool_http_request_duration_seconds_count{status_class="aborted"}.
// What they should get: a client that hangs up while that hook runs is counted once, as aborted
// (the README: "aborted when the client hung up first"), as it is when it hangs up in the handler.
// What they got: the request is counted nowhere: the metrics' own onRequest hook never ran, so its
// onRequestAbort ignores it (only onResponse was taught to count such requests, by elapsedTime).
import pgPoolMetrics from '@fastify-pg-pool/metrics'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { parseExposition } from '../../../metrics/exposition.js'
import { coreApp } from '../../../support/app.js'
import { createTestDatabase, sleep, type TestDatabase, waitUntil } from '../../../support/database.js'
import { listen, startRequest } from '../../../support/http.js'

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

test('a client that hangs up while an earlier onRequest hook runs is counted as aborted, once', {
  timeout: 30_000,
}, async () => {
  const { app } = await coreApp(db.url, { max: 1 })
  const waiting: ((answer: boolean) => void)[] = []
  const closed: string[] = []
  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/slow-')) return
    request.raw.once('close', () => closed.push(request.url))
    const answer = await new Promise<boolean>((resolve) => waiting.push(resolve))
    if (answer) await reply.code(401).send({ message: 'unauthorized' })
  })
  await app.register(pgPoolMetrics)
  app.get('/slow-answered', { config: { db: false } }, async () => ({ ok: true }))
  app.get('/slow-passed', { config: { db: false } }, async () => ({ ok: true }))
  const url = await listen(app)
  const count = async (route: string) =>
    Object.fromEntries(
      parseExposition((await app.inject('/metrics')).body)
        .find('pg_pool_http_request_duration_seconds_count', { route })
        .map((series) => [series.labels.status_class, series.value]),
    )
  try {
    const answered = startRequest(`${url}/slow-answered`)
    await waitUntil(() => waiting.length === 1, 'the hook to hold the first request', 10_000)
    const passed = startRequest(`${url}/slow-passed`)
    await waitUntil(() => waiting.length === 2, 'the hook to hold the second request', 10_000)
    answered.abort()
    passed.abort()
    expect(await answered.done).toBe('aborted')
    expect(await passed.done).toBe('aborted')
    await waitUntil(() => closed.length === 2, 'the server to see both hang-ups', 10_000)
    waiting[0]?.(true)
    waiting[1]?.(false)
    // Whatever the hook does next is done within a few turns of the loop; a generous wait.
    await sleep(300)
    expect(await count('/slow-answered')).toEqual({ aborted: 1 })
    expect(await count('/slow-passed')).toEqual({ aborted: 1 })
  } finally {
    await app.close()
  }
})
