import pgPoolCore from '@fastify-pg-pool/core'
import Fastify from 'fastify'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { createTestDatabase, type TestDatabase, uniqueName, waitFor } from '../support/database.js'

// Found by hostile probing (fifth round), failing on ad56009: the app's postgres.js column transform
// (connection: { transform: postgres.pascal }) renamed the columns of the pool's own capture of what
// onConnect left, so the open-transaction check never fired and no role was restored: requests ran
// as the login superuser. The capture now reads raw rows by position and fails closed on any other
// shape. Also: an onConnect that leaves a block open in any of its forms is refused.

let db: TestDatabase
const low = `fpp_p5_${Math.random().toString(16).slice(2, 8)}`
type Sql = { unsafe: (text: string) => PromiseLike<unknown> & { simple?: () => PromiseLike<unknown> } }

beforeAll(async () => {
  db = await createTestDatabase()
  await db.sql.unsafe(`create role ${low} nosuperuser`)
})
afterAll(async () => {
  await db.drop([low])
})

const variants: Record<string, (sql: Sql) => Promise<void>> = {
  'multi-statement, last opens': async (sql) => {
    await sql.unsafe(`set role ${low}; select 1; begin`)
  },
  'begin then savepoint': async (sql) => {
    await sql.unsafe(`begin; set role ${low}; savepoint a`)
  },
  'start transaction': async (sql) => {
    await sql.unsafe(`start transaction isolation level serializable; set role ${low}`)
  },
  'commit and chain': async (sql) => {
    await sql.unsafe(`begin; set role ${low}; commit and chain`)
  },
  'begin; commit; begin': async (sql) => {
    await sql.unsafe(`begin; commit; begin; set role ${low}`)
  },
  'separate messages, extended protocol begin': async (sql) => {
    await (sql as unknown as postgres.Sql)`begin`
    await (sql as unknown as postgres.Sql)`select set_config('role', ${low}, false)`
  },
  'time zone games then begin': async (sql) => {
    await sql.unsafe(`set time zone 'Pacific/Kiritimati'; begin; set role ${low}; set local time zone 'America/Adak'`)
  },
  'rollback and chain': async (sql) => {
    await sql.unsafe(`begin; rollback and chain; set role ${low}`)
  },
  'savepoint released, block still open': async (sql) => {
    await sql.unsafe(`begin; savepoint s; set role ${low}; release savepoint s`)
  },
}

describe('onConnect leaving a block open in various ways is refused', () => {
  for (const [name, onConnect] of Object.entries(variants)) {
    for (const sessionReset of ['always', 'rollback'] as const) {
      test(`${name} (${sessionReset})`, async () => {
        let app: Awaited<ReturnType<typeof coreApp>> | undefined
        const failed = await coreApp(db.url, { max: 1, sessionReset }, {}, { onConnect: onConnect as never }).then(
          (a) => {
            app = a
            return undefined
          },
          (error: unknown) => error as Error & { cause?: { code?: string } },
        )
        let who: unknown
        if (app !== undefined) {
          app.app.get('/who', async (r) => (await r.db<{ cu: string }[]>`select current_user::text as cu`)[0])
          who = (await app.app.inject('/who')).json()
          await app.app.close()
        }
        expect({ code: failed?.cause?.code, who }).toEqual({ code: 'ON_CONNECT_OPEN_TRANSACTION', who: undefined })
      })
    }
  }
})

describe('onConnect with SET LOCAL only / committed work is accepted', () => {
  test('set local only: accepted, role baseline kept', async () => {
    const t = await coreApp(
      db.url,
      { max: 1 },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`set role ${low}; set local statement_timeout = '1s'`)
        },
      },
    )
    t.app.get('/who', async (r) => (await r.db<{ cu: string }[]>`select current_user::text as cu`)[0])
    for (let i = 0; i < 2; i++) expect((await t.app.inject('/who')).json()).toEqual({ cu: low })
    await t.app.close()
  })
})

describe('ping with an onConnect that leaves a block open', () => {
  test('lazy pool: ping fails and leaves no backend', async () => {
    const t = await coreApp(
      db.url,
      { max: 1, lazy: true },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`begin; set role ${low}`)
        },
      },
    )
    const pgPool = (t.app as unknown as { pgPool: { ping(ms: number): Promise<number> } }).pgPool
    const result = await pgPool.ping(2000).then(
      (ms) => ({ ok: true, ms }),
      (error: Error & { code?: string; cause?: { code?: string } }) => ({
        ok: false,
        code: error.code,
        cause: error.cause?.code,
      }),
    )
    expect(result.ok).toBe(false)
    expect(await waitFor(async () => (await db.countConnections(`${t.applicationName}/ping`)) === 0)).toBe(true)
    await t.app.close()
  })
})

describe('pgbouncer mode against the plain server', () => {
  // onConnect is refused at register with pool.pgbouncer: true (its session state would land on a
  // server connection PgBouncer hands to other clients: round-thirteen/on-connect-role-crosses-apps).
  test('open block still refused (onConnect itself is, with pgbouncer)', async () => {
    const failed = await coreApp(
      db.url,
      { max: 1, pgbouncer: true },
      {},
      {
        onConnect: async (sql) => {
          await sql.unsafe(`begin; set role ${low}`)
        },
      },
    ).then(
      async (a) => {
        await a.app.close()
        return undefined
      },
      (error: unknown) => error as Error & { cause?: { code?: string } },
    )
    expect(failed).toMatchObject({ code: 'FST_PG_POOL_INVALID_OPTION', message: expect.stringContaining('onConnect') })
  })
})

describe('postgres.js column transform given in the connection options', () => {
  for (const sessionReset of ['rollback', 'never', 'always'] as const) {
    test(`pascal transform (${sessionReset}): onConnect's open block must still be refused; no request as the login superuser`, async () => {
      const app = Fastify()
      const parsed = new URL(db.url)
      app.get('/who', async (r) => {
        const rows = await (r as unknown as { db: postgres.Sql }).db<
          Record<string, string>[]
        >`select current_user::text as cu`
        return rows[0]
      })
      const failed = await app
        .register(pgPoolCore, {
          connection: {
            host: parsed.hostname,
            port: Number(parsed.port),
            database: parsed.pathname.slice(1),
            user: decodeURIComponent(parsed.username),
            password: decodeURIComponent(parsed.password),
            transform: postgres.pascal,
          } as never,
          pool: { max: 1, sessionReset, applicationName: uniqueName() },
          onConnect: async (sql) => {
            await sql.unsafe(`begin; set role ${low}`)
          },
        })
        .ready()
        .then(
          () => undefined,
          (error: unknown) => error as Error & { cause?: { code?: string } },
        )
      let who: unknown
      if (failed === undefined) {
        const reply = await app.inject('/who')
        who = reply.statusCode === 200 ? reply.json() : reply.body
      }
      await app.close()
      expect({ code: failed?.cause?.code, who }).toEqual({ code: 'ON_CONNECT_OPEN_TRANSACTION', who: undefined })
    })
  }
})

describe('postgres.js column transform: control with a well-behaved onConnect', () => {
  for (const sessionReset of ['always', 'rollback'] as const) {
    test(`pascal transform (${sessionReset}): onConnect 'set role low' stays the baseline over 3 requests`, async () => {
      const app = Fastify()
      const parsed = new URL(db.url)
      app.get('/who', async (r) => {
        await (r as unknown as { db: postgres.Sql }).db`select 1`
        const rows = await (r as unknown as { db: postgres.Sql }).db<
          Record<string, string>[]
        >`select current_user::text as cu`
        return rows[0]
      })
      await app.register(pgPoolCore, {
        connection: {
          host: parsed.hostname,
          port: Number(parsed.port),
          database: parsed.pathname.slice(1),
          user: decodeURIComponent(parsed.username),
          password: decodeURIComponent(parsed.password),
          transform: postgres.pascal,
        } as never,
        pool: { max: 1, sessionReset, applicationName: uniqueName() },
        onConnect: async (sql) => {
          await sql.unsafe(`set role ${low}`)
        },
      })
      const seen: unknown[] = []
      for (let i = 0; i < 3; i++) {
        const reply = await app.inject('/who')
        seen.push(reply.statusCode === 200 ? reply.json() : reply.statusCode)
      }
      await app.close()
      expect(seen).toEqual([{ Cu: low }, { Cu: low }, { Cu: low }])
    })
  }
})
