// examples/kubernetes/README.md ("What happens in a rolling update", step 4) said that during the
// preClose drain "liveness stays 200: a closing pod must not be restarted". Run as the Deployment
// runs it (examples/basic/src/server.js, SIGTERM with a request in flight, probes as the kubelet
// sends them: a new connection each), /health/live is refused like /health/ready from the moment
// app.close() starts: Fastify closes the listening socket right after preClose (the health README
// says so). What keeps the pod from a liveness restart is that the drain ends (and the process
// exits 0) long before three failed liveness probes (3 x 10 s in deployment.yaml). The README now
// says that.
import { expect, test } from 'vitest'
import { createTestDatabase, waitUntil } from '../../../support/database.js'
import { get, startExample } from '../../round-fifteen/probe-k8s/kubelet-kit.js'

test('during the SIGTERM drain a liveness probe is refused like readiness; the in-flight request finishes, exit 0', {
  timeout: 90_000,
}, async () => {
  const db = await createTestDatabase()
  const app = await startExample(db.url)
  try {
    await waitUntil(async () => (await get(app.port, '/health/live')).status === 200, 'the example to listen', 30_000)
    const slow = get(app.port, '/slow?ms=3000', { timeoutMs: 30_000 })
    await waitUntil(
      async () =>
        (
          await db.sql`select 1 from pg_stat_activity
            where datname = current_database() and query like '%pg_sleep%' and state = 'active'
              and pid <> pg_backend_pid()`
        ).length > 0,
      'the slow request to run',
      15_000,
    )
    const signalled = Date.now()
    app.child.kill('SIGTERM')
    // Wait until the probes see the drain (readiness no longer 200), while the slow request runs.
    let live = await get(app.port, '/health/live')
    await waitUntil(
      async () => {
        live = await get(app.port, '/health/live')
        return live.status !== 200
      },
      'liveness to change',
      10_000,
    )
    expect(live.status).toMatch(/^(ECONNREFUSED|ECONNRESET|503)$/)
    expect((await get(app.port, '/health/ready')).status).toMatch(/^(ECONNREFUSED|ECONNRESET|503)$/)
    expect((await slow).status).toBe(200)
    expect(await app.exited).toEqual({ code: 0, signal: null })
    // Well within the three failed liveness probes (periodSeconds 10) that would restart it.
    expect(Date.now() - signalled).toBeLessThan(30_000)
  } finally {
    app.kill()
    await db.drop()
  }
})
