import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../faults/process-errors.js'
import { coreApp } from '../../support/app.js'
import { noteTable } from '../../support/note-table.js'

// DEFECT (probe-sql-surface), JavaScript callers (TypeScript's types reject these calls).
// What the user does: asks for a stricter transaction with options the API does not take in that
// form: `request.db.begin({ isolation: 'serializable' }, fn)` (the object form app.db.transaction
// and config.db.transaction take), `app.db.transaction(fn, 'serializable')` (the string form
// begin() takes), or `app.db.transaction(fn, { readonly: true })` (a misspelled key).
// What they see: the block runs as a plain BEGIN — READ COMMITTED, read-write — with no error:
// a serializable or read-only transaction the code asked for silently is not one (write skew,
// writes where none were meant to be possible). postgres.js's own `sql.begin({...}, fn)` throws
// (`options.replace is not a function`), and the same options given as a route's
// `config.db.transaction` are refused when the route is declared (route-settings.ts,
// "in JavaScript or TypeScript, the route's declaration" in the README).
// What they should see: a coded refusal (FST_PG_POOL_INVALID_OPTION, as for a route), never a
// weaker transaction than asked for.
//
// Cause: packages/core/src/query-api.ts `beginText` (around line 88) turns any non-string options
// into a bare 'BEGIN'; `beginStatement` (around line 165), used by `app.db.transaction`, reads only
// the known keys of whatever it is given (a string, an object with a misspelled key) and builds a
// bare 'BEGIN' from the rest, without the validation route-settings.ts applies
// (`transactionKeys`, `isolationLevels`).
//
// Suggested fix: validate both as route-settings.ts does: `begin(options, fn)` accepts only a string
// (throw FST_PG_POOL_INVALID_OPTION otherwise, or accept the object form too, validated);
// `app.db.transaction(fn, options)` accepts only an object of the known keys and values.

const fx = noteTable()
failOnProcessErrors()

type Untyped = (...args: unknown[]) => Promise<unknown>
const isolationAndMode =
  "select current_setting('transaction_isolation') as isolation, current_setting('transaction_read_only') as read_only"

test('request.db.begin({ isolation: "serializable" }, fn): never a read-committed block without a word', async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.get('/begin', async (request) => {
    const begin = request.db.begin as unknown as Untyped
    return begin({ isolation: 'serializable' }, async (tx: typeof request.db) => (await tx.unsafe(isolationAndMode))[0])
  })
  const res = await app.inject('/begin')
  // Either refused with a code, or the transaction asked for.
  if (res.statusCode === 200) expect(res.json()).toEqual({ isolation: 'serializable', read_only: 'off' })
  else expect(res.json().code).toBe('FST_PG_POOL_INVALID_OPTION')
})

test("app.db.transaction(fn, 'serializable') and (fn, { readonly: true }): never a plain transaction without a word", async () => {
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  const transaction = app.db.transaction as unknown as Untyped
  const run = (options: unknown) =>
    transaction(async (tx: typeof app.db) => (await tx.unsafe(isolationAndMode))[0], options).then(
      (row) => row,
      (error: { code?: string }) => ({ refused: error.code }),
    )
  const asString = await run('serializable')
  const misspelled = await run({ readonly: true })
  expect([asString, misspelled]).toEqual([
    { refused: 'FST_PG_POOL_INVALID_OPTION' },
    { refused: 'FST_PG_POOL_INVALID_OPTION' },
  ])
})
