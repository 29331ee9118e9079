// What the user does: runs the Kubernetes example (examples/kubernetes: the app with
// DATABASE_REPLICA_URLS naming the two standbys of postgres-replica.yaml) and one standby is down
// while app pods start: a rollout, a node drain, a standby re-cloning with pg_basebackup.
// What they should get: what the manifests' README promises for a failing read replica: the pod
// starts, readiness is 200 `warn` (its reads go to the primary), and the pod joins the Service;
// the standby gets reads again once it answers.
// What they got: the process exits with 1 at startup (FST_PG_POOL_CONNECT_FAILED from the
// replica's warm-up), so every new pod crash-loops (CrashLoopBackOff, up to 5 min between tries)
// while the primary is fine: the rollout stalls, and a drained node's pods never come back.
import { afterAll, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, waitFor } from '../../../support/database.js'
import { freePort } from '../../../support/embedded-server.js'
import { type ExampleProcess, get, startExample } from './kubelet-kit.js'

let db: TestDatabase
let app: ExampleProcess | undefined
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(async () => {
  app?.kill()
  await db?.drop()
})

test('a standby down while the pod starts: the pod starts and is ready (warn), reads served by the primary', {
  timeout: 30_000,
}, async () => {
  const down = new URL(db.directUrl)
  down.port = String(await freePort())
  app = await startExample(db.url, { DATABASE_REPLICA_URLS: `${db.directUrl},${down.toString()}` })
  const example = app
  let exited = false
  void example.exited.then(() => {
    exited = true
  })
  // The startup probe: /health/live until it answers (the Deployment gives 30 x 2 s).
  const started = await waitFor(
    async () => exited || (await get(example.port, '/health/live', { timeoutMs: 1_000 })).status === 200,
    20_000,
    200,
  )
  expect({ started, exited }, example.output().slice(-600)).toEqual({ started: true, exited: false })
  const ready = await get(example.port, '/health/ready', { timeoutMs: 2_000 })
  expect(ready.status).toBe(200)
  expect(JSON.parse(ready.body)).toMatchObject({ status: 'warn' })
  const items = await get(example.port, '/items')
  expect(items.status).toBe(200)
  expect(JSON.parse(items.body)).toHaveLength(3)
})
