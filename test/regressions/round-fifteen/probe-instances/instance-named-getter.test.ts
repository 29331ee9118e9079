import pgPoolCore, { type PoolDb, type RequestDb } from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: names an instance `getter` or `setter` (names the core accepts: a letter,
// then letters), registers it in an encapsulated plugin (a module that owns its database), and the
// default instance at the root after it (or another instance in a sibling plugin).
// What they should get: `app.dbs.getter` / `app.dbs.setter` at the root, the instance's query API,
// as for any other name (`then`, `toString`, `constructor` are held or refused by name).
// What they got: the core decorates each context with the one shared `dbs` object, and Fastify's
// `decorate(name, value)` reads a value with a `getter` or `setter` function as an accessor: at the
// root, `app.dbs` becomes the result of calling the instance's query function (a `getter`), or
// `undefined` (a `setter`); `app.dbs.<name>` throws a TypeError for every name.

let main: TestDatabase
let other: TestDatabase
let app: FastifyInstance | undefined
beforeAll(async () => {
  main = await createTestDatabase()
  other = await createTestDatabase()
})
afterEach(async () => {
  await app?.close()
  app = undefined
})
afterAll(async () => {
  await main.drop()
  await other.drop()
})

const otherName = () => new URL(other.directUrl).pathname.slice(1)

for (const name of ['getter', 'setter']) {
  test(`an instance named ${name} in a child plugin: app.dbs.${name} at the root is its query API`, async () => {
    app = Fastify()
    await app.register(async (child) => {
      await child.register(pgPoolCore, { name, connection: other.url })
    })
    await app.register(pgPoolCore, { connection: main.url })
    app.get('/r', async (request) => {
      const [row] = await ((request.dbs as Record<string, RequestDb>)[name] as RequestDb)<
        { db: string }[]
      >`select current_database() as db`
      return row
    })
    await app.ready()
    const seen = await (async () => {
      try {
        const dbs = app?.dbs as Record<string, PoolDb> | undefined
        const db = dbs?.[name]
        if (typeof db !== 'function') return { kind: typeof dbs, entry: typeof db }
        const [row] = await db<{ db: string }[]>`select current_database() as db`
        return { db: row?.db }
      } catch (error) {
        return { threw: String(error) }
      }
    })()
    expect(seen).toEqual({ db: otherName() })
    // request.dbs is a getter of the core's own: held.
    expect((await app.inject('/r')).json()).toEqual({ db: otherName() })
  })
}
