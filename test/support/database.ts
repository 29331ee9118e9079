import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { inject } from 'vitest'

export interface TestDatabase {
  /**
   * URL of this file's own database (the server's password included when it has one); in the
   * PgBouncer leg (PGBOUNCER=1) it goes through PgBouncer in transaction mode.
   */
  readonly url: string
  /** True in the PgBouncer leg. */
  readonly viaBouncer: boolean
  /** URL of this database on the server itself, never through PgBouncer. */
  readonly directUrl: string
  /** The password in `url`, for secret-leak assertions ('' with trust auth and no password). */
  readonly password: string
  /** A plain postgres.js client on this database, for setup and assertions. */
  readonly sql: postgres.Sql
  /** A plain client on the server's admin database (pg_stat_activity, terminate). */
  readonly admin: postgres.Sql
  /** Server connections whose application_name is `name` (in this database). */
  countConnections(name: string, state?: string): Promise<number>
  /** Terminates the backends of `name`; resolves with how many. */
  terminate(name: string): Promise<number>
  /** Running queries of `name` whose text matches `like`. */
  running(name: string, like: string): Promise<number>
  /** Drops the database, then `roles` (which may own objects in it), then ends the clients. */
  drop(roles?: readonly string[]): Promise<void>
}

/** `url` with another user and password (a login role a test created). */
export function urlAs(url: string, user: string, password: string): string {
  const parsed = new URL(url)
  parsed.username = user
  parsed.password = password
  return parsed.toString()
}

export function uniqueName(prefix = 'fpp'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`
}

/** Creates a database of its own for the calling test file, on the run's server. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl')
  const admin = postgres(adminUrl, { max: 2, onnotice: () => {} })
  const name = `t_${randomBytes(5).toString('hex')}`
  await admin.unsafe(`create database ${name}`)
  const parsed = new URL(adminUrl)
  parsed.pathname = `/${name}`
  const direct = parsed.toString()
  const bouncerPort = inject('bouncerPort')
  if (bouncerPort !== undefined) {
    parsed.hostname = '127.0.0.1'
    parsed.port = String(bouncerPort)
  }
  const url = parsed.toString()
  const sql = postgres(direct, { max: 3, onnotice: () => {} })
  const count = async (query: postgres.PendingQuery<{ n: number }[]>) => (await query)[0]?.n ?? 0
  return {
    url,
    viaBouncer: bouncerPort !== undefined,
    directUrl: direct,
    password: decodeURIComponent(parsed.password),
    sql,
    admin,
    countConnections: (app, state) =>
      count(admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where application_name = ${app} and datname = ${name}
        ${state ? admin`and state = ${state}` : admin``}`),
    async terminate(app) {
      const rows = await admin`
        select pg_terminate_backend(pid) from pg_stat_activity
        where application_name = ${app} and datname = ${name} and pid <> pg_backend_pid()`
      return rows.length
    },
    running: (app, like) =>
      count(admin<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where application_name = ${app} and datname = ${name} and state = 'active' and query like ${like}`),
    async drop(roles = []) {
      await sql.end({ timeout: 1 })
      await admin.unsafe(`drop database if exists ${name} with (force)`)
      for (const role of roles) await admin.unsafe(`drop role if exists ${role}`)
      await admin.end({ timeout: 1 })
    },
  }
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last verdict. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  everyMs = 25,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() >= deadline) return false
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** Like waitFor, but throws naming what did not happen (for steps that must happen). */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 3_000,
): Promise<void> {
  if (!(await waitFor(check, timeoutMs, 5))) throw new Error(`timed out waiting for ${what}`)
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
