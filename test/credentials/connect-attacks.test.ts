import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { failOnProcessErrors } from '../faults/process-errors.js'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, urlAs, waitUntil } from '../support/database.js'

// From hostile probing (held): a password with every URL-special character, channel names and
// payloads at the limits, a refused channel name, unlistening during delivery. (A refused password
// and a password function that never resolves need password auth: test/secrets and
// test/credentials/password-source cover them.)

let db: TestDatabase
const role = uniqueName('fpp_probe').replace('-', '_')
const password = "p@ss:w/o#rd%?&=+ é'x"
failOnProcessErrors()
beforeAll(async () => {
  db = await createTestDatabase()
  await db.admin.unsafe(`create role ${role} login password '${password.replace(/'/g, "''")}'`)
})
afterAll(async () => {
  await db.drop([role])
})

describe('connection and LISTEN edge cases that hold', () => {
  test("a URL password with '@', ':', '/', '#', '%', '?', '&', '=', '+', space, non-ASCII, quote: pool and LISTEN log in", async () => {
    const { app } = await coreApp(urlAs(db.directUrl, role, encodeURIComponent(password)), { pgbouncer: false })
    try {
      expect(await app.db`select current_user as u`).toEqual([{ u: role }])
      const got: string[] = []
      await app.db.listen('sp', (n) => void got.push(n.payload))
      await app.db.notify('sp', 'y')
      await waitUntil(() => got.length === 1, 'the notification')
    } finally {
      await app.close()
    }
  })

  test('payloads up to 7999 bytes, uppercase, quoted and non-ASCII channels are delivered, each to its own', async () => {
    const { app } = await coreApp(db.directUrl, { pgbouncer: false, lazy: true })
    try {
      const got: Record<string, string[]> = {}
      const on = (channel: string) =>
        app.db.listen(channel, (n) => {
          got[channel] ??= []
          got[channel].push(n.payload.length > 20 ? `#${n.payload.length}` : n.payload)
        })
      const channels = ['Orders', 'orders', 'a"b', 'é'.repeat(31), 'x'.repeat(63)]
      for (const channel of channels) await on(channel)
      for (const channel of channels) await db.sql`select pg_notify(${channel}, ${channel.slice(0, 5)})`
      await db.sql`select pg_notify('orders', ${'y'.repeat(7999)})`
      await waitUntil(() => channels.every((c) => got[c]?.length) && got.orders?.length === 2, 'every channel')
      expect(got.Orders).toEqual(['Order'])
      expect(got.orders).toEqual(['order', '#7999'])
      expect(got['a"b']).toEqual(['a"b'])
    } finally {
      await app.close()
    }
  })

  test('a channel name the server refuses (NUL) rejects that listen() only: other channels keep their connection', async () => {
    const { app } = await coreApp(db.directUrl, { pgbouncer: false, lazy: true })
    try {
      const got: string[] = []
      await app.db.listen('good', (n) => void got.push(n.payload))
      await expect(app.db.listen('bad\u0000x', () => {})).rejects.toHaveProperty('code')
      await db.sql`select pg_notify('good', 'after')`
      await waitUntil(() => got.length === 1, 'the good channel')
      expect(app.pgPool.listener()).toMatchObject({ listeners: 1, channels: 1, connected: true, reconnections: 0 })
    } finally {
      await app.close()
    }
  })

  test('a handler that unlistens itself and another during delivery: no crash, later notifications go to nobody unlistened', async () => {
    const { app } = await coreApp(db.directUrl, { pgbouncer: false, lazy: true })
    try {
      const got: string[] = []
      let second: { unlisten(): Promise<void> } | undefined
      const first = await app.db.listen('u', (n) => {
        got.push(`first ${n.payload}`)
        void first.unlisten()
        void second?.unlisten()
      })
      second = await app.db.listen('u', (n) => void got.push(`second ${n.payload}`))
      const third = await app.db.listen('u', (n) => void got.push(`third ${n.payload}`))
      await db.sql`select pg_notify('u', '1')`
      await waitUntil(() => got.includes('third 1'), 'the first delivery')
      await db.sql`select pg_notify('u', '2')`
      await waitUntil(() => got.includes('third 2'), 'the second delivery')
      expect(got.filter((line) => line.endsWith('2'))).toEqual(['third 2'])
      await third.unlisten()
    } finally {
      await app.close()
    }
  })
})
