// Hostile probing (fastify features): attacks on the core under less-travelled Fastify 5 features that
// HELD; kept as regression tests.
import { describe, expect, test } from 'vitest'
import { coreApp } from '../support/app.js'
import { sleep, waitFor } from '../support/database.js'
import { noteTable } from '../support/note-table.js'

const fx = noteTable()
const notes = fx.notes
const tx = { config: { db: { transaction: true } } } as const
const codeOf = (error: unknown) => (error as { code?: string }).code ?? String(error)

describe('more', () => {
  test('async preHandler that sends without returning reply: the handler runs on; rows agree with the status', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    let handler: unknown
    app.get(
      '/ph',
      {
        ...tx,
        preHandler: async (request, reply) => {
          await request.db`insert into note values ('ph')`
          reply.code(201).send({ early: true })
        },
      },
      async (request) => {
        try {
          await request.db`insert into note values ('handler')`
          handler = 'ran'
        } catch (error) {
          handler = codeOf(error)
        }
        return { late: true }
      },
    )
    const r = await app.inject('/ph')
    await sleep(100)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    const rows = await notes()
    expect({ status: r.statusCode, body: r.json() }).toEqual({ status: 201, body: { early: true } })
    // The handler's row must not be committed without the client knowing; the 201 says 'ph' is.
    expect(rows.includes('ph')).toBe(true)
    if (handler === 'ran') expect(rows).toEqual(['handler', 'ph'])
    else expect(rows).toEqual(['ph'])
  })

  test('a 404 handler declared with config.db.transaction: 200 commits its write, 404 rolls back', async () => {
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    app.setNotFoundHandler({ config: { db: { transaction: true } } } as never, async (request, reply) => {
      await request.db`insert into note values (${request.url})`
      if (request.url.startsWith('/spa')) return reply.type('text/html').send('<html></html>')
      return reply.code(404).send({ nf: true })
    })
    expect((await app.inject('/spa/page')).statusCode).toBe(200)
    expect((await app.inject('/nothing')).statusCode).toBe(404)
    expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
    expect(await notes()).toEqual(['/spa/page'])
  })
})
