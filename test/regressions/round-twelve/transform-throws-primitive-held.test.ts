import pgPoolCore from '@fastify-pg-pool/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { uniqueName } from '../../support/database.js'
import { noteTable } from '../../support/note-table.js'

// HELD (probe-fourth): a value transform of the app's that throws a primitive (a string) or a
// frozen object (postgres.js cannot define its query on either; postgres-adapter.ts guardAppCode
// wraps them in an Error with the throw as its `cause`), and a shared singleton error thrown
// twice (identity in appThrows), on a plain and a pipelined route: the query fails at once with
// it, the request is answered, a server error after it still answers at once, and the pool is
// whole (nothing leased) afterwards.

const fx = noteTable()
failOnProcessErrors()

const frozen = Object.freeze({ code: 'FROZEN_THROW', message: 'frozen thing' })
const singleton = new Error('the same error object every time')

async function appWith(): Promise<FastifyInstance> {
  const parsed = new URL(fx.db.url)
  const app = Fastify()
  fx.closers.push(() => app.close())
  await app.register(pgPoolCore, {
    connection: {
      host: parsed.hostname,
      port: Number(parsed.port),
      database: parsed.pathname.slice(1),
      user: decodeURIComponent(parsed.username),
      password: decodeURIComponent(parsed.password),
      transform: {
        value: {
          from: (value: unknown) => {
            if (value === 'string') throw 'a string thrown'
            if (value === 'frozen') throw frozen
            if (value === 'singleton') throw singleton
            return value
          },
        },
      },
    } as never,
    pool: { max: 1, applicationName: uniqueName() },
  })
  for (const pipeline of [false, true]) {
    const prefix = pipeline ? '/pipe' : '/plain'
    app.get(`${prefix}/throw/:what`, { config: { db: { pipeline } } }, async (request) => {
      const what = (request.params as { what: string }).what
      try {
        await request.db`select ${what}::text as v`
        return { threw: false }
      } catch (error) {
        const e = error as { message?: unknown; cause?: unknown }
        return { same: error === singleton, message: String(e.message), cause: e.cause === frozen ? 'frozen' : e.cause }
      }
    })
    app.get(`${prefix}/fails`, { config: { db: { pipeline } } }, async (request) => {
      await request.db`select 1 / 0 as never`
      return 'never'
    })
  }
  app.get('/ok', async (request) => (await request.db`select 42 as n`)[0])
  await app.ready()
  return app
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'no answer'> =>
  Promise.race([promise, new Promise<'no answer'>((resolve) => setTimeout(() => resolve('no answer'), ms))])

for (const prefix of ['/plain', '/pipe']) {
  test(`${prefix}: a transform throwing a primitive, a frozen object, a singleton twice`, async () => {
    const app = await appWith()
    const ask = async (url: string) => {
      const res = await within(app.inject(url), 15_000)
      return res === 'no answer' ? res : { status: res.statusCode, body: res.json() as unknown }
    }
    expect(await ask(`${prefix}/throw/string`)).toEqual({
      status: 200,
      body: { same: false, message: 'a string thrown', cause: 'a string thrown' },
    })
    expect(await ask(`${prefix}/throw/frozen`)).toEqual({
      status: 200,
      body: { same: false, message: 'frozen thing', cause: 'frozen' },
    })
    for (let i = 0; i < 2; i++) {
      expect(await ask(`${prefix}/throw/singleton`)).toEqual({
        status: 200,
        body: { same: true, message: 'the same error object every time' },
      })
      const fails = await ask(`${prefix}/fails`)
      expect(
        fails === 'no answer' ? fails : { status: fails.status, code: (fails.body as { code?: string }).code },
      ).toEqual({
        status: 400,
        code: '22012',
      })
    }
    expect(await ask('/ok')).toEqual({ status: 200, body: { n: 42 } })
    expect(app.pgPool.stats().leased).toBe(0)
  }, 60_000)
}
