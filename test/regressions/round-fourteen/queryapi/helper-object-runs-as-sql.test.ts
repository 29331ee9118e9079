import { expect, test } from 'vitest'
import { failOnProcessErrors } from '../../../faults/process-errors.js'
import { coreApp } from '../../../support/app.js'
import { waitFor } from '../../../support/database.js'
import { noteTable } from '../../../support/note-table.js'

// DEFECT (probe-queryapi): `request.db(value)` takes any object whose `raw` is an array for a tagged
// template's strings (templateOrHelper in packages/core/src/query-api.ts, as postgres.js's own
// `sql()` does), and builds a query whose TEXT is the object's `0`, `1`, ... entries. A JSON body
// `{"raw": [], "0": "(item) select s from secrets", "length": 1}` is such an object. The core
// README's own sample (`insert into orders ${request.db(request.body)} returning id`, "Retrying a
// transaction route safely") and the migration guide's `request.db(body, 'username')` hand the
// request body to that helper; the helper's query, interpolated as a fragment, is spliced into the
// outer statement's text: SQL injection from a request body, through the API the docs teach
// ("Values interpolated into the tagged template are sent as parameters, never spliced into the
// text"). Expected: a value that is not a genuine template strings array (a JSON body, a query
// string object) is never taken as SQL text; the request fails, nothing of its text runs.

const fx = noteTable()
failOnProcessErrors()

const SECRET = 'TOPSECRET-4f1c'

async function setup(): Promise<void> {
  await fx.db.sql.unsafe(`
    create table if not exists orders (id serial primary key, item text);
    create table if not exists secrets (s text);
    truncate orders; truncate secrets;
    insert into secrets values ('${SECRET}');
  `)
}

async function leakedRows(): Promise<number> {
  const [row] = await fx.db.sql<{ n: number }[]>`select count(*)::int as n from orders where item = ${SECRET}`
  return row?.n ?? 0
}

test("the README's insert sample with a JSON body holding `raw`: the body's text never runs as SQL", async () => {
  await setup()
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/orders', async (request, reply) => {
    const [order] =
      await request.db`insert into orders ${request.db(request.body as Record<string, unknown>)} returning id`
    return reply.code(201).send({ orderId: order?.id })
  })
  // Control: the sample works with an ordinary body.
  const ok = await app.inject({ method: 'POST', url: '/orders', payload: { item: 'book' } })
  expect(ok.statusCode).toBe(201)
  const evil = await app.inject({
    method: 'POST',
    url: '/orders',
    payload: { raw: [], 0: '(item) select s from secrets', length: 1 },
  })
  expect(await leakedRows(), 'a row copied from secrets by SQL text taken from the body').toBe(0)
  expect(evil.statusCode).toBeGreaterThanOrEqual(400)
  expect(await waitFor(() => app.pgPool.stats().leased === 0)).toBe(true)
})

test('a list helper (`in request.db(ids)`) given a JSON object: no SQL from the body runs, nothing of secrets answered', async () => {
  await setup()
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  app.post('/orders/find', async (request) => {
    const { ids } = request.body as { ids: unknown }
    return request.db`select item from orders where id in ${request.db(ids as number[])}`
  })
  const ok = await app.inject({ method: 'POST', url: '/orders/find', payload: { ids: [1, 2] } })
  expect(ok.statusCode).toBe(200)
  const evil = await app.inject({
    method: 'POST',
    url: '/orders/find',
    payload: { ids: { raw: [], 0: '(0) union all select s from secrets', length: 1 } },
  })
  expect(evil.body).not.toContain(SECRET)
  expect(evil.statusCode).toBeGreaterThanOrEqual(400)
})

test('app.db(value) outside requests: an object with `raw` is not taken as SQL text', async () => {
  await setup()
  fx.current = await coreApp(fx.db.url, { max: 1 })
  const { app } = fx.current
  await app.ready()
  const body = JSON.parse('{"raw": [], "0": "(item) select s from secrets", "length": 1}') as Record<string, unknown>
  const outcome = await (async () => app.db`insert into orders ${app.db(body)} returning id`)().then(
    () => 'ran',
    (error: { code?: string }) => error.code ?? 'error',
  )
  expect(await leakedRows()).toBe(0)
  expect(outcome).not.toBe('ran')
})
