import { randomBytes } from 'node:crypto'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import pgPoolBackpressure, { type PgPoolBackpressureOptions } from '@fastify-pg-pool/backpressure'
import pgPoolCore, { type PgPoolCoreOptions, type PoolOptions } from '@fastify-pg-pool/core'
import pgPoolOtel, { type PgPoolOtelOptions } from '@fastify-pg-pool/otel'
import type { TracerProvider } from '@opentelemetry/api'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { inject } from 'vitest'
import { type TestDatabase, uniqueName } from '../support/database.js'

export interface OtelAppOptions {
  pool?: PoolOptions
  otel?: PgPoolOtelOptions
  /** Register @fastify/otel first (as its README asks), with this provider. */
  fastifyOtel?: TracerProvider | undefined
  backpressure?: PgPoolBackpressureOptions
  onLease?: PgPoolCoreOptions['onLease']
}

export interface OtelApp {
  readonly app: FastifyInstance
  readonly applicationName: string
}

/**
 * @fastify/otel (optional), the core, admission control (optional) and our plugin, in the
 * order an app registers them, with the routes the tests use:
 * `/gate` waits for the test's lock on `gate`; `/move` is a route transaction of two updates;
 * `/refund` the same answering 409 (rolled back); `/fail` sends a value the server refuses;
 * `/insert` inserts a value; `/item/:id` reads one row; `/prepared` counts the connection's
 * server-side prepared statements; `/the/names/...` reads its own application_name twice.
 */
export async function otelApp(url: string, options: OtelAppOptions = {}): Promise<OtelApp> {
  const app = Fastify({ logger: false })
  if (options.fastifyOtel !== undefined) {
    const instrumentation = new FastifyOtelInstrumentation()
    instrumentation.setTracerProvider(options.fastifyOtel)
    await app.register(instrumentation.plugin())
  }
  const applicationName = options.pool?.applicationName ?? uniqueName('otel')
  const pgbouncer = inject('bouncerPort') !== undefined
  await app.register(pgPoolCore, {
    connection: url,
    pool: { pgbouncer, ...options.pool, applicationName },
    ...(options.onLease === undefined ? {} : { onLease: options.onLease }),
  })
  if (options.backpressure !== undefined) await app.register(pgPoolBackpressure, options.backpressure)
  await app.register(pgPoolOtel, options.otel ?? {})

  app.get('/gate', async (request) => {
    const [row] = await request.db<{ n: number }[]>`select count(*)::int as n from gate`
    return row
  })
  const move = async (request: FastifyRequest) => {
    await request.db`update items set stock = stock - 1 where id = 1`
    await request.db`update items set stock = stock + 1 where id = 2`
  }
  app.post('/move', { config: { db: { transaction: true } } }, async (request) => {
    await move(request)
    return { ok: true }
  })
  app.post('/refund', { config: { db: { transaction: true } } }, async (request, reply) => {
    await move(request)
    return reply.code(409).send({ ok: false })
  })
  app.post('/duplicate', { config: { db: { transaction: true } } }, async (request) => {
    // Deferred: the violation surfaces at COMMIT.
    await request.db`insert into deferred_codes (code) values ('a'), ('a')`
    return { ok: true }
  })
  app.get<{ Querystring: { value: string } }>('/fail', async (request) => {
    await request.db`select ${request.query.value}::int as n`
    return { ok: true }
  })
  app.post<{ Body: { value: string } }>('/insert', async (request) => {
    await request.db`insert into notes (body) values (${request.body.value})`
    return { ok: true }
  })
  app.get<{ Params: { id: string } }>('/item/:id', async (request) => {
    const [item] = await request.db`select id, name from items where id = ${Number(request.params.id)}`
    return item ?? null
  })
  app.get('/the/names/this/connection/has/while/it/runs/:id', async (request) => {
    const [row] = await request.db<{ setting: string; activity: string }[]>`
      select current_setting('application_name') as setting,
             (select application_name from pg_stat_activity where pid = pg_backend_pid()) as activity`
    return row
  })
  app.get('/prepared', async (request) => {
    const [row] = await request.db<{ n: number }[]>`select count(*)::int as n from pg_prepared_statements`
    return row
  })
  await app.ready()
  return { app, applicationName }
}

/** The tables the routes use; idempotent. */
export async function createTables(db: TestDatabase): Promise<void> {
  await db.sql.unsafe(`
    create table if not exists items (id int primary key, name text not null, stock int not null);
    insert into items values (1, 'one', 10), (2, 'two', 10) on conflict do nothing;
    create table if not exists gate (id int);
    create table if not exists notes (body text);
    create table if not exists deferred_codes (code text unique deferrable initially deferred);
  `)
}

/**
 * Holds an exclusive lock on `gate` from the test's own connection until `open()`: a request
 * on `/gate` then holds its connection, deterministically, for as long as the test wants.
 */
export async function closeGate(db: TestDatabase): Promise<{ open(): Promise<void> }> {
  let release!: () => void
  const released = new Promise<void>((resolve) => {
    release = resolve
  })
  let locked!: () => void
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve
  })
  const transaction = db.sql.begin(async (tx) => {
    await tx`lock table gate in access exclusive mode`
    locked()
    await released
  })
  await isLocked
  return {
    async open() {
      release()
      await transaction
    },
  }
}

export interface PasswordRole {
  /** This database's URL as the role, with its password. */
  readonly url: string
  readonly password: string
  drop(): Promise<void>
}

/**
 * A login role with a password of its own, allowed on the test tables: whatever the server's
 * authentication (trust included), the password is in the URL the app connects with, so a
 * test can look for it in every attribute.
 */
export async function passwordRole(db: TestDatabase): Promise<PasswordRole> {
  const role = `otel_${randomBytes(4).toString('hex')}`
  const password = `pw-${randomBytes(8).toString('hex')}`
  await db.admin.unsafe(`create role ${role} login password '${password}'`)
  await db.sql.unsafe(`grant select, insert, update on items, notes, gate, deferred_codes to ${role}`)
  await db.sql.unsafe(`grant usage on schema public to ${role}`)
  const url = new URL(db.url)
  url.username = role
  url.password = password
  return {
    url: url.toString(),
    password,
    async drop() {
      await db.sql.unsafe(`drop owned by ${role}`)
      await db.admin.unsafe(`drop role if exists ${role}`)
    },
  }
}
