// Held (probe-third-replicas). What the user does: starts the app with a replica that cannot be
// used at register: one whose address swallows packets (a blackholed host), one that refuses the
// login (wrong password); then closes the app while it is still so.
// What they should get: the app starts (round fifteen's fix), the log says which replica and why
// without its password, reads go to the primary, and app.close() ends promptly (nothing waits on
// the replica's warm-up or its monitor).
import { afterEach, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { noteTable } from '../../../support/note-table.js'
import { startTcpProxy, type TcpProxy } from '../../../support/tcp-proxy.js'

const fx = noteTable()
let proxy: TcpProxy | undefined

afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

const closesWithin = async (close: () => Promise<unknown>, ms: number) =>
  Promise.race([
    close().then(() => 'closed'),
    new Promise<string>((resolve) => setTimeout(() => resolve(`still closing after ${ms} ms`), ms)),
  ])

test('a blackholed replica: the app starts, reads on the primary, close is prompt', async () => {
  const port = Number(new URL(fx.db.directUrl).port)
  proxy = await startTcpProxy(port)
  proxy.setMode('blackhole')
  fx.current = await coreApp(
    fx.db.directUrl,
    { max: 2, connectTimeout: 1_000 },
    {},
    {
      replicas: [proxy.urlFor(fx.db.directUrl)],
      replica: { lagInterval: 100 },
    },
  )
  const { app, logs } = fx.current
  app.get('/one', { config: { db: { readOnly: true } } }, async (request) => {
    const [row] = await request.db`select 1 as one`
    return row
  })
  await app.ready()
  expect((await app.inject('/one')).json()).toEqual({ one: 1 })
  expect(logs.some((line) => /unreachable at startup/.test(String(line.msg)))).toBe(true)
  expect(await closesWithin(() => app.close(), 8_000)).toBe('closed')
})

test('a replica the server refuses (a missing database; a wrong password where it checks one): the app starts, the log says why, without the password', async () => {
  const url = new URL(fx.db.directUrl)
  url.username = 'postgres'
  url.password = 'wrong-secret-xyz'
  url.pathname = '/no_such_database_xyz'
  fx.current = await coreApp(
    fx.db.directUrl,
    { max: 2, connectTimeout: 2_000 },
    {},
    {
      replicas: [url.toString()],
      replica: { lagInterval: 100 },
    },
  )
  const { app, logs } = fx.current
  await app.ready()
  const text = JSON.stringify(logs)
  expect(text).not.toContain('wrong-secret-xyz')
  expect(logs.some((line) => /unreachable at startup/.test(String(line.msg)))).toBe(true)
  // The machine's PostgreSQL trusts local logins (3D000: the database); the embedded one checks
  // passwords first (28P01): either is the server's own refusal, named in the log.
  expect(text).toMatch(/no_such_database_xyz|3D000|does not exist|28P01|password authentication failed/)
  expect(await closesWithin(() => app.close(), 8_000)).toBe('closed')
})
