import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { noteTable } from '../../../support/note-table.js'
import { addSessionProbe, expectCleanSession } from '../../../support/session-probe.js'

// HELD (probe-queryapi): the insert and update helpers given a request body with hostile keys and
// values (the README's `request.db(request.body)`): a key holding a quote, a dot, SQL
// (`"; drop table note; --`), `constructor`, `$1`; a value that is an object holding `raw` (only a
// top-level object is read as a template: helper-object-runs-as-sql.test.ts). Keys become quoted
// identifiers (a 500 undefined_column, or a composite field), values parameters: the table is
// intact, nothing runs from the body, and the next request's session is clean.

const fx = noteTable()
failOnProcessErrors()

test('hostile keys and values in insert/update helpers: identifiers and parameters, never SQL', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  addSessionProbe(app)
  app.post('/insert', async (request) => {
    const rows =
      await request.db`insert into note ${request.db(request.body as Record<string, unknown>)} returning body`
    return rows
  })
  app.post('/update', async (request) => {
    const rows =
      await request.db`update note set ${request.db(request.body as Record<string, unknown>)} where body = 'seed' returning body`
    return rows
  })
  await fx.db.sql`insert into note values ('seed')`
  const hostile: [string, Record<string, unknown>][] = [
    ['a quote', { 'body" text, "x': 'v' }],
    ['a dot', { 'note.body': 'v' }],
    ['SQL', { '"; drop table note; --': 'v' }],
    ['$1', { $1: 'v' }],
    ['constructor', { constructor: 'v' }],
  ]
  for (const [name, payload] of hostile) {
    for (const url of ['/insert', '/update']) {
      const res = await app.inject({ method: 'POST', url, payload })
      expect(res.statusCode, `${name} ${url}: ${res.body}`).toBeGreaterThanOrEqual(400)
      expect(res.body).not.toContain('drop table')
    }
  }
  // A value holding what a template's strings look like is a parameter, not SQL.
  const template = { raw: [], 0: "x'); drop table note; --", length: 1 }
  const inserted = await app.inject({ method: 'POST', url: '/insert', payload: { body: template } })
  expect(inserted.statusCode).toBe(200)
  // postgres.js's text serializer: String(value).
  expect(inserted.json()).toEqual([{ body: '[object Object]' }])
  expect((await fx.db.sql`select to_regclass('note') is not null as kept`)[0]).toEqual({ kept: true })
  expect(await fx.notes()).toEqual(['[object Object]', 'seed'])
  await expectCleanSession(fx.db, fx.current)
})
