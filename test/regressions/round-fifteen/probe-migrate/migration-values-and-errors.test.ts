import { readFileSync } from 'node:fs'
import fastifyPostgres from '@fastify/postgres'
import Fastify, { type FastifyInstance } from 'fastify'
import pgPool from 'fastify-pg-pool'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { createTestDatabase, type TestDatabase } from '../../../support/database.js'

// What the user does: moves an @fastify/postgres app over as docs/migrating-from-fastify-postgres.md
// says, in a process whose TZ is not UTC (America/New_York here), with handlers that catch
// database errors the pg way and bodies whose optional fields are left out.
// What they should get: the guide saying where results, stored values and caught errors change,
// with samples that keep the old behaviour.
// What they got: the guide said only "as with pg, bigint and numeric come back as strings".
// Silently: `date` columns read a day early (UTC midnight, pg: local midnight), `interval`,
// `numeric[]`, `point` answered other JSON, a JS Date written to a `timestamp` column was stored
// 5 hours off from what pg wrote (and read back shifted); `err.constraint` (pg's name) was
// undefined, so a handler's `err.constraint === '...'` branch was never taken, and `err.message`
// was no longer the server's; an `undefined` value (an optional body field) became a 500
// UNDEFINED_VALUE where pg wrote NULL. Each row of the guide's tables and each sample is checked
// here against pg and fastify-pg-pool side by side.

const guide = readFileSync(new URL('../../../../docs/migrating-from-fastify-postgres.md', import.meta.url), 'utf8')

function sample(name: string): string {
  const found = new RegExp(`<!-- sample: ${name} -->\\n\`\`\`js\\n([\\s\\S]*?)\\n\`\`\``).exec(guide)
  expect(found, `the guide has a "${name}" sample`).not.toBeNull()
  return found?.[1] ?? ''
}

/** The rows of the markdown table after `<!-- marker -->`, as cells (header and rule left out). */
function table(marker: string): string[][] {
  const at = guide.indexOf(`<!-- ${marker} -->`)
  expect(at, `the guide has a ${marker} table`).toBeGreaterThan(-1)
  if (at === -1) return []
  const lines = guide.slice(at).split('\n').slice(1)
  const rows: string[][] = []
  for (const line of lines) {
    if (!line.startsWith('|')) break
    rows.push(
      line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim()),
    )
  }
  return rows.slice(2)
}

/** The first `code` span of a cell. */
const codeOf = (cell: string | undefined) => /`([^`]+)`/.exec(cell ?? '')?.[1]

type AsyncFn = (...args: unknown[]) => Promise<void>
const AsyncFunction = (async () => {}).constructor as new (...args: string[]) => AsyncFn

const zoneBefore = process.env.TZ
const zone = 'America/New_York'
let before: TestDatabase
let after: TestDatabase
let pgApp: FastifyInstance
let poolApp: FastifyInstance

beforeAll(async () => {
  process.env.TZ = zone
  ;[before, after] = await Promise.all([createTestDatabase(), createTestDatabase()])
  for (const db of [before, after]) {
    // The server's zone is UTC whatever the machine's: the process's (New York) differs from it.
    await db.sql.unsafe(`alter database ${new URL(db.directUrl).pathname.slice(1)} set timezone = 'UTC'`)
    await db.sql`create table users (id serial primary key, username text not null unique, bio text)`
    await db.sql`create table events (id int primary key, at timestamp not null)`
    await db.sql`create table docs (id int, data jsonb)`
    await db.sql`insert into users (username) values ('ada'), ('grace')`
  }
  pgApp = Fastify()
  await pgApp.register(fastifyPostgres, { connectionString: before.directUrl })
  poolApp = Fastify()
  await poolApp.register(pgPool, { connection: after.directUrl })
  for (const name of ['optional-value', 'caught-error']) {
    await new AsyncFunction('fastify', sample(`before ${name}`))(pgApp)
    await new AsyncFunction('app', sample(`after ${name}`))(poolApp)
  }
  await pgApp.ready()
  await poolApp.ready()
})
afterAll(async () => {
  await pgApp?.close()
  await poolApp?.close()
  if (zoneBefore === undefined) delete process.env.TZ
  else process.env.TZ = zoneBefore
  await Promise.all([before?.drop(), after?.drop()])
})

/** A value as a route would answer it, with its class: what a client or the code sees. */
function shape(value: unknown): string {
  const name = value === null || value === undefined ? String(value) : (value as object).constructor.name
  return `${name} ${JSON.stringify(value)}`
}

/** A type's value read through pg and through fastify-pg-pool. */
async function readBoth(expression: string): Promise<{ pg: string; pool: string }> {
  const { rows } = await pgApp.pg.query(`select ${expression} as v`)
  const [row] = await poolApp.db.unsafe(`select ${expression} as v`)
  return { pg: shape(rows[0].v), pool: shape(row?.v) }
}

/** Each type by the name the guide's table gives it, and a value of it. */
const differing: Record<string, string> = {
  '`date`': `'2024-01-15'::date`,
  '`date[]`': `array['2024-01-15'::date]`,
  '`interval`': `'1 hour'::interval`,
  '`numeric[]`': `array[1.5]::numeric[]`,
  '`point`': `'(1,2)'::point`,
  "`'infinity'` (`timestamptz`, `date`)": `'infinity'::timestamptz`,
}
const alike = [
  `1::int8`,
  `count(*) from generate_series(1, 3)`,
  `1.50::numeric`,
  `1.5::money`,
  `'{"a":1}'::json`,
  `'{"a":[1]}'::jsonb`,
  `'\\x01'::bytea`,
  `'2024-01-15 10:00:00+00'::timestamptz`,
  `'2024-01-15 10:00:00'::timestamp`,
  `array[1, 2]::int8[]`,
  `array['a,b', null]::text[]`,
]

describe('values that change shape', () => {
  test('the guide’s table lists each type that reads otherwise, and only those', async () => {
    const rows = table('value-types')
    const named = rows.map((row) => row[0])
    expect(named.sort()).toEqual(Object.keys(differing).sort())
    for (const [type, expression] of Object.entries(differing)) {
      const read = await readBoth(expression)
      expect(read.pool, `${type} reads otherwise`).not.toBe(read.pg)
    }
    for (const expression of alike) {
      const read = await readBoth(expression)
      expect(read.pool, `${expression} reads alike`).toBe(read.pg)
    }
  })

  test('the date parser the guide gives reads a date as pg does', async () => {
    const [, parser] = /const day = (.*)\n/.exec(guide) ?? []
    expect(parser).toBeDefined()
    const day = new Function(`return ${parser}`)() as (text: string) => Date
    const app = Fastify()
    const url = new URL(after.directUrl)
    await app.register(pgPool, {
      connection: {
        host: url.hostname,
        port: Number(url.port),
        username: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
        types: { day: { to: 1082, from: [1082], serialize: (x: unknown) => x, parse: day } },
      } as never,
    })
    try {
      const [row] = await app.db`select '2024-01-15'::date as v`
      expect(shape(row?.v)).toBe((await readBoth(`'2024-01-15'::date`)).pg)
    } finally {
      await app.close()
    }
  })

  test('a Date written to a timestamp column: 5 h off from pg’s, unless the session has the process’s zone', async () => {
    const instant = new Date('2024-01-15T10:00:00Z')
    await pgApp.pg.query('insert into events values (1, $1)', [instant])
    await poolApp.db`insert into events values (1, ${instant})`
    const stored = async (db: TestDatabase) => (await db.sql`select at::text as t from events where id = 1`)[0]?.t
    const [byPg, byPool] = [await stored(before), await stored(after)]
    expect(byPg).toBe('2024-01-15 05:00:00') // New York's wall time
    expect(byPool).not.toBe(byPg) // the hazard the guide names
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the guide's template text, quoted
    const remedy = ['${process.env.DATABASE_URL}', '?TimeZone=', '${Intl.DateTimeFormat().resolvedOptions().timeZone}']
    expect(guide).toContain(remedy.join(''))
    const zoned = Fastify()
    await zoned.register(pgPool, {
      connection: `${after.directUrl}?TimeZone=${Intl.DateTimeFormat().resolvedOptions().timeZone}`,
    })
    try {
      await zoned.db`insert into events values (2, ${instant})`
      const [row] = await zoned.db`select at::text as t, at from events where id = 2`
      expect(row?.t).toBe(byPg)
      expect((row?.at as Date | undefined)?.toISOString()).toBe(instant.toISOString())
    } finally {
      await zoned.close()
    }
  })

  test('JSON text for a jsonb parameter: an object with pg, a JSON string here; the guide’s forms store the object', async () => {
    const text = JSON.stringify({ a: 1 })
    await pgApp.pg.query('insert into docs values (1, $1)', [text])
    await poolApp.db`insert into docs values (1, ${text})`
    await poolApp.db`insert into docs values (2, ${{ a: 1 } as never})`
    await poolApp.db`insert into docs values (3, ${poolApp.db.json({ a: 1 })})`
    await poolApp.db`insert into docs values (4, ${text}::text::jsonb)`
    const kinds = async (db: TestDatabase) =>
      (await db.sql`select jsonb_typeof(data) as kind from docs order by id`).map((row) => row.kind)
    expect(await kinds(before)).toEqual(['object'])
    expect(await kinds(after)).toEqual(['string', 'object', 'object', 'object'])
    expect(guide).toContain('`JSON.stringify(body)` is stored as one JSON string')
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the guide's template text, quoted
    expect(guide).toContain('`${text}::text::jsonb`')
  })

  test('an undefined value: the guide’s sample answers as pg’s; without `?? null` it is a 500', async () => {
    const post = (app: FastifyInstance, payload: object) =>
      app
        .inject({ method: 'POST', url: '/users/1/bio', payload })
        .then((r) => ({ status: r.statusCode, body: r.json() }))
    for (const payload of [{}, { bio: 'math' }]) {
      const [pgAnswer, poolAnswer] = [await post(pgApp, payload), await post(poolApp, payload)]
      expect(pgAnswer.status).toBe(200)
      expect(poolAnswer).toEqual(pgAnswer)
    }
    const literal = await poolApp.db`update users set bio = ${undefined as unknown as string} where id = 1`.then(
      () => 'ran',
      (error: { code?: string }) => error.code,
    )
    expect(literal).toBe('UNDEFINED_VALUE')
    expect(guide).toContain('`connection: { transform: { undefined: null } }`')
  })
})

describe('errors a handler catches', () => {
  test('each field of the guide’s table holds what pg’s field held', async () => {
    const caught = async (text: string) => {
      const failed = (error: Record<string, unknown>) => error
      const none = (): Record<string, unknown> => ({})
      const pg = await pgApp.pg.query(text).then(none, failed)
      const pool = await poolApp.db.unsafe(text).then(none, failed)
      return { pg, pool }
    }
    // A unique violation names a constraint; a not-null violation a column.
    const pairs = [
      await caught("insert into users (username) values ('ada')"),
      await caught('insert into users (username) values (null)'),
    ]
    const rows = table('error-fields')
    expect(rows.map((row) => codeOf(row[0]))).toEqual(
      expect.arrayContaining(['code', 'detail', 'constraint', 'table', 'column', 'schema', 'message']),
    )
    for (const [pgField, poolField] of rows) {
      const [from, to] = [codeOf(pgField) as string, codeOf(poolField) as string]
      expect(to, `${from} has a counterpart`).toBeDefined()
      const held = pairs.filter((pair) => pair.pg[from] !== undefined)
      expect(held.length, `pg's ${from} is set by one of the errors`).toBeGreaterThan(0)
      for (const pair of held) expect(pair.pool[to], `${to}, pg's ${from}`).toEqual(pair.pg[from])
    }
    // The literal translation's test: pg's names are not there.
    const [unique] = pairs
    expect(unique?.pool.constraint).toBeUndefined()
    expect(unique?.pool.message).not.toBe(unique?.pg.message)
  })

  test('the caught-error samples answer alike; pg’s field name would fall through to the default 409', async () => {
    const post = (app: FastifyInstance, username: string) =>
      app
        .inject({ method: 'POST', url: '/signup', payload: { username } })
        .then((r) => ({ status: r.statusCode, body: r.json() }))
    const created = [await post(pgApp, 'linus'), await post(poolApp, 'linus')]
    expect(created[0]).toEqual({ status: 201, body: { id: expect.any(Number) } })
    expect(created[1]).toEqual(created[0])
    const taken = [await post(pgApp, 'ada'), await post(poolApp, 'ada')]
    expect(taken[0]).toEqual({ status: 409, body: { message: 'ada is taken' } })
    expect(taken[1]).toEqual(taken[0])

    const literal = Fastify()
    await literal.register(pgPool, { connection: after.directUrl })
    const code = sample('after caught-error').replace('err.constraint_name', 'err.constraint')
    await new AsyncFunction('app', code)(literal)
    try {
      const answer = await post(literal, 'ada')
      expect(answer.status).toBe(409)
      expect(answer.body.message).not.toBe('ada is taken')
    } finally {
      await literal.close()
    }
  })
})
