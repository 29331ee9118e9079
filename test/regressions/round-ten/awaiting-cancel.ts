import type { FastifyInstance } from 'fastify'
import type postgres from 'postgres'
import type { TestDatabase } from '../../support/database.js'
import { sleep, waitUntil } from '../../support/database.js'
import { startRequest } from '../../support/http.js'
import type { SlowCancelProxy } from './slow-cancel-proxy.js'

/**
 * Leaves the pool's connection (max: 1) back from an aborted request with its cancel request
 * still on its way (held `cancelDelayMs` by the proxy): a client hangs up on `/abandoned` (a
 * pg_sleep(5)), the pool sends its cancel, and an administrator's pg_cancel_backend ends the
 * statement within the pool's 50 ms grace (retried when a slow machine misses it). The app must
 * have `/pid` and `/abandoned` routes. Resolves once the lease is back; false if every try missed.
 */
export async function leaveAwaitingCancel(
  app: FastifyInstance,
  base: string,
  db: TestDatabase,
  applicationName: string,
  proxy: SlowCancelProxy,
  admin: postgres.Sql,
  cancelDelayMs: number,
): Promise<boolean> {
  const retired: string[] = []
  const onClose = (reason: string) => void retired.push(reason)
  app.pgPool.on('close', onClose)
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      const { pid } = (await (await fetch(`${base}/pid`)).json()) as { pid: number }
      await admin`select 1`
      retired.length = 0
      const cancelsBefore = proxy.cancels
      proxy.cancelDelayMs = cancelDelayMs
      proxy.onCancel = () => void admin`select pg_cancel_backend(${pid})`.catch(() => {})
      let released = false
      const onRelease = () => {
        released = true
        app.pgPool.off('release', onRelease)
      }
      app.pgPool.on('release', onRelease)
      const abandoned = startRequest(`${base}/abandoned`)
      await waitUntil(async () => (await db.running(applicationName, '%abandoned%')) === 1, 'the statement to run')
      abandoned.abort()
      await waitUntil(() => proxy.cancels === cancelsBefore + 1, "the pool's cancel to be sent")
      // Released by its holder (the connection then waits for the cancel request, counted leased).
      await waitUntil(() => released, 'the lease to come back')
      proxy.onCancel = undefined
      if (retired.length === 0) return true
      await sleep(cancelDelayMs + 200)
    }
    return false
  } finally {
    app.pgPool.off('close', onClose)
  }
}
