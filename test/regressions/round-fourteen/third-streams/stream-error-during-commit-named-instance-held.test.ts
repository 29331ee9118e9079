// HELD (probe-third-streams): a route transaction that also used a named instance
// (request.dbs.<name>, whose lease makes the reply wait asynchronously for its tokens) and returns
// a Node stream failing just after its first chunk, during the COMMIT: no >= 400 over the committed
// write (the reply is its 2xx, cut), and no process error.

import { Readable } from 'node:stream'
import pgPoolCore, { type RequestDb } from '@fastify-pg-pool/core'
import { afterEach, describe, expect, test } from 'vitest'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { listen } from '../../../support/http.js'
import { noteTable } from '../../../support/note-table.js'
import { exchange, processErrors } from '../streams/kit.js'

const fx = noteTable()
const tx = { config: { db: { transaction: true } } } as const
const errorsOfProcess = processErrors()
afterEach(() => {
  errorsOfProcess.stop()
})

describe('a streamed payload that fails after its first chunk during the COMMIT, request.dbs used', () => {
  test('no >= 400 over a committed write', async () => {
    errorsOfProcess.start()
    fx.current = await coreApp(fx.db.url, { max: 1 })
    const { app } = fx.current
    await app.register(pgPoolCore, { name: 'other', connection: fx.db.url, pool: { max: 1 } })
    app.post('/order', tx, async (request) => {
      await ((request.dbs as Record<string, RequestDb>).other as RequestDb)`select 1`
      await request.db`insert into note values ('order')`
      const stream = new Readable({ read() {} })
      setTimeout(() => {
        stream.push('first part')
        setImmediate(() => stream.destroy(new Error('upstream broke after its first part')))
      }, 50)
      return stream
    })
    const base = await listen(app)
    const res = await exchange(`${base}/order`)
    expect(await waitFor(() => app.pgPools.all().every((view) => view.stats().leased === 0))).toBe(true)
    const committed = (await fx.notes()).includes('order')
    expect({
      status: typeof res.status === 'number' && res.status >= 400 ? `error ${res.status}` : 'success or cut',
      committed,
      processErrors: errorsOfProcess.stop(),
    }).toEqual({
      status: committed ? 'success or cut' : expect.stringMatching(/^error/),
      committed,
      processErrors: [],
    })
  })
})
