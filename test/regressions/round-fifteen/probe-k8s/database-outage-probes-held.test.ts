// Held attack: the example app (examples/basic/src/server.js, as the Deployment runs it) probed as
// a kubelet does while its database goes away (connections refused, then a frozen network) and
// comes back. Expected (examples/kubernetes/README.md "Probes"): liveness answers 200 throughout
// (no restart storm), readiness turns 503 with a coded reason within its timeoutSeconds (2 s) and
// 200 again once the database answers, in the same process, and requests are served again.
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor, waitUntil } from '../../../support/database.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'
import { type ExampleProcess, get, startExample } from './kubelet-kit.js'

let db: TestDatabase
let proxy: TcpProxy
let app: ExampleProcess | undefined
beforeAll(async () => {
  db = await createTestDatabase()
  proxy = await startTcpProxy(Number(new URL(db.directUrl).port))
})
afterAll(async () => {
  app?.kill()
  await proxy?.close()
  await db?.drop()
})

test('refused, then frozen: liveness stays 200, readiness 503 then 200, same process', {
  timeout: 60_000,
}, async () => {
  app = await startExample(proxy.urlFor(db.url))
  const example = app
  await waitUntil(
    async () => (await get(example.port, '/health/live', { timeoutMs: 1_000 })).status === 200,
    'the app to listen',
    20_000,
  )
  const live: (number | string)[] = []
  // The kubelet's probes, with the Deployment's timeouts (liveness 2 s, readiness 2 s).
  const readiness = () => get(example.port, '/health/ready', { timeoutMs: 2_000 })
  const liveness = async () => {
    live.push((await get(example.port, '/health/live', { timeoutMs: 2_000 })).status)
  }
  expect((await readiness()).status).toBe(200)

  for (const mode of ['reset', 'blackhole'] as const) {
    proxy.setMode(mode)
    if (mode === 'blackhole') proxy.cutAll()
    let failed = ''
    const down = await waitFor(
      async () => {
        await liveness()
        const answer = await readiness()
        if (answer.status === 503) failed = answer.body
        return answer.status === 503
      },
      15_000,
      200,
    )
    expect(down, `readiness while the database is ${mode}`).toBe(true)
    expect(JSON.parse(failed)).toMatchObject({ status: 'fail', output: expect.stringMatching(/FST_PG_POOL_/) })
    proxy.setMode('pass')
    const up = await waitFor(
      async () => {
        await liveness()
        return (await readiness()).status === 200
      },
      15_000,
      200,
    )
    expect(up, `readiness after ${mode}`).toBe(true)
    expect((await get(example.port, '/items')).status).toBe(200)
  }
  expect(live.length).toBeGreaterThan(2)
  expect(live.every((status) => status === 200)).toBe(true)
  expect(example.child.exitCode).toBe(null)
  example.child.kill('SIGTERM')
  expect(await example.exited).toEqual({ code: 0, signal: null })
})
