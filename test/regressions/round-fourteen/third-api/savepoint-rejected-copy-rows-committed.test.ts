import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-third-api): a savepoint() callback that starts a COPY FROM STDIN on its handle,
// writes a row and returns with the writer still open: the savepoint's RELEASE is refused with
// COPY_IN_PROGRESS, and so is its ROLLBACK TO SAVEPOINT, so savepoint() REJECTS (COPY_IN_PROGRESS).
// The handler, told the savepoint failed, finishes the writer it kept (the README: "finish the
// COPY's stream first"): the COPY completes inside the savepoint nobody released or rolled back,
// and the route transaction COMMITS its rows with a 200. A rejected savepoint's work is committed.
// Expected: when a savepoint's work cannot be rolled back, the transaction around it does not
// commit (or savepoint() does not reject while its work stays).

const fx = noteTable()
failOnProcessErrors()

// biome-ignore lint/suspicious/noExplicitAny: the handles' many call forms
type Sql = any

test('route transaction: rows of a COPY left open in a rejected savepoint are not committed with a 200', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/c', { config: { db: { transaction: true } } }, async (request) => {
    let writer: Sql
    const savepoint = await (request.db as Sql)
      .savepoint(async (sp: Sql) => {
        writer = await sp`copy note from stdin`.writable()
        writer.write('copied\n')
        return 'returned'
      })
      .then(
        (value: string) => value,
        (error: { code?: string }) => `rejected ${error.code}`,
      )
    const ended = await new Promise((resolve) => {
      writer.on('error', (error: { code?: string }) => resolve(`error ${error.code}`))
      writer.end(() => resolve('finished'))
    })
    return { savepoint, ended }
  })
  const res = await app.inject({ method: 'POST', url: '/c' })
  const notes = await fx.notes()
  const rejected = res.statusCode < 300 && String(res.json().savepoint).startsWith('rejected')
  expect(
    rejected && notes.includes('copied'),
    `${res.statusCode} ${res.body}: a rejected savepoint's COPY rows committed: ${JSON.stringify(notes)}`,
  ).toBe(false)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)

test('request.db.begin(): rows of a COPY left open in a rejected savepoint are not committed', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/b', async (request) =>
    request.db.begin(async (tx: Sql) => {
      let writer: Sql
      const savepoint = await tx
        .savepoint(async (sp: Sql) => {
          writer = await sp`copy note from stdin`.writable()
          writer.write('copied\n')
          return 'returned'
        })
        .then(
          (value: string) => value,
          (error: { code?: string }) => `rejected ${error.code}`,
        )
      await new Promise((resolve) => {
        writer.on('error', resolve)
        writer.end(resolve)
      })
      return { savepoint }
    }),
  )
  const res = await app.inject({ method: 'POST', url: '/b' })
  const notes = await fx.notes()
  const rejected = res.statusCode < 300 && String(res.json().savepoint).startsWith('rejected')
  expect(rejected && notes.includes('copied'), `${res.statusCode} ${res.body}: ${JSON.stringify(notes)}`).toBe(false)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
}, 60_000)
