import { Agent, request as httpRequest } from 'node:http'
import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../../../support/database.js'
import { activeResources, processListeners } from '../../../support/growth-kit.js'

// Attack: 30 times in one process, an app with the umbrella (health, metrics, admission control),
// a named second instance, a LISTEN connection with a notification received, listening on a real
// port and served over kept-alive connections that stay open into close(). Expected: each cycle
// leaves no backend of its own on the server (pool, LISTEN, ping), and the process ends with no
// more process listeners, timers or sockets than it started with, and no MaxListeners warning.

let db: TestDatabase
beforeAll(async () => {
  db = await createTestDatabase()
})
afterAll(() => db.drop())

function get(agent: Agent, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

async function backends(prefix: string): Promise<number> {
  const [row] = await db.admin<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity where application_name like ${`${prefix}%`}`
  return row?.n ?? 0
}

describe('30 served cycles', () => {
  test('no backend, listener, timer or socket left; no MaxListeners warning', { timeout: 180_000 }, async () => {
    // The test's own clients open their sockets first: they are not the apps'.
    await db.sql`select 1`
    await backends('none')
    const before = { listeners: processListeners(), resources: activeResources() }
    const warnings: string[] = []
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`)
    process.on('warning', onWarning)
    const prefix = uniqueName('cyc')
    for (let i = 0; i < 30; i++) {
      const name = `${prefix}-${i}`
      const app = Fastify()
      await app.register(pgPool, { connection: db.directUrl, pool: { max: 2, applicationName: name } })
      await app.register(pgPoolCore, {
        name: 'other',
        connection: db.directUrl,
        pool: { max: 1, applicationName: `${name}-o` },
      })
      app.get('/q', async (request) => (await request.db`select 1 as one`)[0])
      app.get(
        '/o',
        async (request) => (await (request.dbs.other as NonNullable<typeof request.dbs.other>)`select 2 as two`)[0],
      )
      let heard = 0
      const listening = await app.db.listen(`chan_${i}`, () => {
        heard++
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const port = (app.server.address() as { port: number }).port
      const agent = new Agent({ keepAlive: true, maxSockets: 4 })
      const statuses = await Promise.all([
        get(agent, port, '/q'),
        get(agent, port, '/o'),
        get(agent, port, '/health/ready'),
        get(agent, port, '/metrics'),
      ])
      expect(statuses).toEqual([200, 200, 200, 200])
      await db.sql`select pg_notify(${`chan_${i}`}, 'x')`
      expect(await waitFor(() => heard === 1, 5_000)).toBe(true)
      if (i % 2 === 0) await listening.unlisten()
      // The kept-alive sockets are still open: close() must end them.
      await app.close()
      agent.destroy()
      expect(await waitFor(async () => (await backends(name)) === 0, 10_000), `cycle ${i}`).toBe(true)
    }
    expect(await backends(prefix)).toBe(0)
    process.off('warning', onWarning)
    expect(processListeners()).toEqual(before.listeners)
    const after = activeResources()
    expect(await waitFor(() => (activeResources().Timeout ?? 0) <= (before.resources.Timeout ?? 0), 5_000)).toBe(true)
    expect(
      await waitFor(() => (activeResources().TCPSocketWrap ?? 0) <= (before.resources.TCPSocketWrap ?? 0), 5_000),
      JSON.stringify({ before: before.resources, after }),
    ).toBe(true)
    expect(activeResources().TCPServerWrap ?? 0).toBeLessThanOrEqual(before.resources.TCPServerWrap ?? 0)
    expect(warnings.filter((w) => /MaxListeners/.test(w))).toEqual([])
  })
})
