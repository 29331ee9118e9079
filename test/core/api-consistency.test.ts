import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { noteTable } from '../support/note-table.js'

// Held attacks from hostile probing (round 8, request.db misuse): what a query's promise told the handler must match what is in the database.

const fx = noteTable({ primaryKey: true })
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const

function track(outcomes: Record<string, string>, name: string, p: PromiseLike<unknown>) {
  return Promise.resolve(p).then(
    () => {
      outcomes[name] = 'ok'
    },
    (error: { code?: string }) => {
      outcomes[name] = error.code ?? 'error'
    },
  )
}

async function expectAgree(outcomes: Record<string, string>, names: string[]) {
  expect(await waitFor(() => names.every((n) => outcomes[n] !== undefined))).toBe(true)
  const rows = await notes()
  const told = names.filter((n) => outcomes[n] === 'ok').sort()
  expect({ rows: rows.filter((r) => names.includes(r)).sort(), outcomes }).toEqual({ rows: told, outcomes })
}

describe('promises agree with the database', () => {
  test('fire-and-forget statements on a plain route: each one told ok is there, each refused is not', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const outcomes: Record<string, string> = {}
    const names = ['f0', 'f1', 'f2', 'f3', 'f4']
    app.get('/fire', async (request) => {
      await request.db`select 1`
      for (const n of names) track(outcomes, n, request.db`insert into note values (${n})`)
      return { ok: true }
    })
    expect((await app.inject('/fire')).statusCode).toBe(200)
    await expectAgree(outcomes, names)
  })

  test('reply.send() then a statement on a route transaction: its outcome agrees with the commit', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const outcomes: Record<string, string> = {}
    app.get('/race', tx, async (request, reply) => {
      await request.db`insert into note values ('a')`
      reply.send({ ok: true })
      await track(outcomes, 'b', request.db`insert into note values ('b')`)
      return reply
    })
    const res = await app.inject('/race')
    expect(res.statusCode).toBe(200)
    await expectAgree(outcomes, ['b'])
    expect(await notes()).toContain('a')
  })

  test('app.db.lease(): a statement on the lease beside its begin() block is not undone by the block', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    const outcomes: Record<string, string> = {}
    const lease = await app.db.lease()
    try {
      await Promise.allSettled([
        track(
          outcomes,
          'blk',
          lease.begin(async (sql) => {
            await sql`insert into note values ('blk')`
            await sleep(50)
            throw new Error('job step failed')
          }),
        ),
        track(
          outcomes,
          'job-log',
          Promise.resolve().then(() => lease`insert into note values ('job-log')`),
        ),
      ])
    } finally {
      await lease.release()
    }
    await expectAgree(outcomes, ['blk', 'job-log'])
  })
})

describe('a transaction ended in SQL inside a route transaction', () => {
  test("`rollback` sent by the handler's own helper, then more work, 2xx: the client is told 2xx for work that was rolled back", async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('order')`
      // e.g. a helper ported from node-postgres that "cleans up" with ROLLBACK on a caught error
      await request.db`insert into note values ('order')`.catch(() => request.db`rollback`)
      await request.db`insert into note values ('audit')`
      return { ok: true }
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    const rows = await notes()
    // The promise: never a 2xx for work that is not committed ('order' was rolled back).
    if (res.statusCode < 300) expect(rows).toContain('order')
    else expect(rows).toEqual([])
  })

  test('`commit` in SQL, then more work, then a throw: the error reply leaves work committed', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.post('/order', tx, async (request) => {
      await request.db`insert into note values ('first')`
      await request.db`commit`
      await request.db`insert into note values ('second')`
      throw Object.assign(new Error('validation failed late'), { statusCode: 422 })
    })
    const res = await app.inject({ method: 'POST', url: '/order' })
    expect(res.statusCode).toBeGreaterThanOrEqual(400)
    // "rolled back on a thrown error": at least what ran after the pool lost its transaction.
    expect(await notes()).not.toContain('second')
  })
})
