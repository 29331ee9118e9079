import type * as postgres from 'postgres'
import type { Clock } from './clock.js'
import type { ResolvedConnection, ResolvedPoolOptions } from './options.js'
import { createServerClient, type RawRow, rawText } from './postgres-adapter.js'
import { type CloseReason, type PoolConnection, ServerConnection } from './server-connection.js'
import {
  AS_LOGIN_SQL,
  baselineOf,
  CAPTURE_SETTINGS_SQL,
  CAPTURE_WHO_SQL,
  capturedWho,
  DBLINK_SQL,
  KEPT_STATEMENTS_SQL,
  LOGIN_USER_SQL,
  prepareResetCheck,
  ROLLBACK_SQL,
  textRows,
} from './session-reset.js'

/**
 * Opens one server connection; the pool's only way to get one (fakes replace it in unit tests).
 * An abort gives the opening up at once (the pool is closing).
 */
export type ConnectionFactory = (signal: AbortSignal) => Promise<PoolConnection>

/** Share of maxLifetime taken off at random, so that connections opened together do not retire together. */
export const LIFETIME_JITTER = 0.15

export interface FactorySettings {
  readonly connection: ResolvedConnection
  readonly options: ResolvedPoolOptions
  readonly clock: Clock
  readonly onNotice: (notice: postgres.Notice) => boolean | undefined
  /** The array type oids of the server, loaded by the first connection and shared. */
  readonly arrayTypes: Record<number, number> | undefined
  /** `application_name` of the connections (the ping's differs). */
  readonly applicationName?: string
  /** Bounds the whole opening (default: the pool's connectTimeout). */
  readonly connectTimeout?: number
  /**
   * connectTimeout bounds the whole host list, not each host (the ping's timeout): each host gets
   * an equal share of what is left, so a frozen host cannot take it all from the next ones.
   */
  readonly timeoutSpansHosts?: boolean
  /** The host of a list tried first, shared by the pool's openings and its pings. */
  readonly hostPreference?: HostPreference
  /**
   * Runs once on each new connection before anyone gets it (search_path, a role, settings);
   * what it leaves on the session is restored by every session reset.
   */
  readonly onConnect?: ((db: postgres.Sql<{}>) => unknown) | undefined
  /**
   * The pool is a primary's: with a host list, a server in recovery (a standby) is skipped, as
   * target_session_attrs=read-write would (postgres.js does not check it on every connection).
   */
  readonly requirePrimary?: boolean
  /**
   * Connections that leases will hold (not the ping's): with the full session reset, its check
   * is prepared on each before anyone gets it (session-reset.ts, RESET_CHECK).
   */
  readonly leased?: boolean
}

/** The index in a host list of the last host that was the primary: openings try it first. */
export interface HostPreference {
  index: number
}

/** A code the opening failed with when every host of a list was a standby (or unreachable). */
export const NOT_PRIMARY = 'NOT_PRIMARY'

/** A code the opening failed with when onConnect returned inside a transaction block. */
export const ON_CONNECT_OPEN_TRANSACTION = 'ON_CONNECT_OPEN_TRANSACTION'

/** A code the opening failed with when nothing answered in time. */
export const CONNECT_TIMEOUT = 'CONNECT_TIMEOUT'

/**
 * The reason to abort an opening's signal with when the caller's deadline passed (the ping's),
 * rather than because the pool closes: what still runs on it gets a cancel request.
 */
export const OPENING_DEADLINE = 'opening deadline'

export function connectionFactory(settings: FactorySettings): ConnectionFactory {
  const { connection, options, clock } = settings
  const connectTimeout = settings.connectTimeout ?? options.connectTimeout
  const clientOptions: postgres.Options<{}> = {
    ...connection.options,
    // Not set unless given: postgres.js reads a URL's `?prepare=false` only when the key is absent.
    ...(options.pgbouncer ? { prepare: false } : {}),
    connection: {
      // What postgres.js's parsers read values right with, winning over database and role
      // defaults (options.ts refuses other values given here). Not behind PgBouncer, which refuses
      // startup parameters it does not know: there they are the server's (docs/pgbouncer-and-sizing.md).
      ...(options.pgbouncer ? {} : { bytea_output: 'hex', extra_float_digits: 1 }),
      ...connection.options.connection,
      application_name: settings.applicationName ?? options.applicationName,
      // PgBouncer refuses startup parameters it does not know: there, statement_timeout
      // belongs on the role or database (the client-side deadline still applies).
      ...(options.statementTimeout > 0 && !options.pgbouncer ? { statement_timeout: options.statementTimeout } : {}),
    },
  }
  const hosts = settings.requirePrimary === true ? connection.hosts : []
  const prepareCheck = settings.leased === true && options.sessionReset === 'always' && !options.pgbouncer
  const preferred = settings.hostPreference ?? { index: 0 }
  const open = async (
    signal: AbortSignal,
    timeoutMs: number,
    server?: { host: string; port: number },
  ): Promise<PoolConnection> => {
    let conn: ServerConnection | undefined
    // A password function is called here, once per connection, and postgres.js only gets its
    // value: postgres.js awaits the function in a promise nobody handles, so a rejection there
    // would end the process. Its wait counts against connectTimeout with the rest.
    const password = connection.password?.()
    password?.catch(() => {})
    const timed = { ...clientOptions, connect_timeout: timeoutMs / 1000 }
    // As lists: postgres.js splits a host string at its colons (an IPv6 literal), not a list.
    const serverOptions =
      server === undefined ? timed : { ...timed, host: [server.host] as never, port: [server.port] as never }
    const client = createServerClient({
      url: connection.url,
      options: password === undefined ? serverOptions : { ...serverOptions, password: () => password },
      onNotice: settings.onNotice,
      onClose: () => conn?.noteSocketClosed(),
      onUnusable: () => conn?.markClosed('error'),
    })
    const now = clock.now()
    const lifetime = options.maxLifetime
    conn = new ServerConnection(
      client,
      now,
      lifetime > 0 ? now + lifetime * (1 - Math.random() * LIFETIME_JITTER) : Number.POSITIVE_INFINITY,
      timeoutMs,
      () => clock.now(),
    )
    // postgres.js's connect_timeout ends at the handshake: a server frozen right after it would
    // leave this connection opening forever, counted against max. The whole opening is bounded.
    let timer: object | undefined
    // An opening given up at its deadline may have a statement running (onConnect's, waiting on a
    // lock): a backend that waits never notices its client left, so the server is told to stop it
    // before the close. Not when the pool closes: the cancel request's own connection, to a server
    // that may be frozen, would keep the process alive for up to connectTimeout after app.close().
    const giveUp = (reason: CloseReason) => {
      if (reason !== 'shutdown') conn?.cancel()
      void conn?.end(reason, 0)
    }
    const deadline = new Promise<never>((_, reject) => {
      timer = clock.setTimeout(() => {
        reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: CONNECT_TIMEOUT }))
        giveUp('error')
      }, timeoutMs)
    })
    const connected =
      password === undefined ? client.open(settings.arrayTypes) : password.then(() => client.open(settings.arrayTypes))
    const opened =
      server === undefined
        ? connected
        : connected.then(async () => {
            // By position: an app's column transform would rename the column.
            // Raw: the app's parsers (a bool read as 0/1) must not make a primary a standby.
            const [row] = (await client.sql.unsafe(IN_RECOVERY_SQL).raw()) as unknown as RawRow[]
            if (rawText(row?.[0]) !== 'f') {
              throw Object.assign(new Error(`${server.host}:${server.port} is in recovery (a standby)`), {
                code: NOT_PRIMARY,
              })
            }
          })
    const onConnect = settings.onConnect
    const configured =
      onConnect === undefined
        ? opened
        : opened.then(async () => {
            // Raw rows, by position (textRows): the app's transforms do not reach them.
            const raw = (text: string) => client.sql.unsafe(text).simple().raw()
            const [[login] = []] = textRows(await raw(LOGIN_USER_SQL), 1)
            await onConnect(client.sql)
            // What onConnect set is every reset's baseline: a DateStyle, bytea_output or
            // extra_float_digits postgres.js would misread by is refused here, as at open.
            await client.checkSettings()
            const who = capturedWho(await raw(CAPTURE_WHO_SQL))
            if (who.inBlock) {
              throw Object.assign(
                new Error('onConnect left a transaction open: commit or roll it back before it returns'),
                { code: ON_CONNECT_OPEN_TRANSACTION },
              )
            }
            // Sent together, run in order: the ROLLBACK whatever the others did.
            const [, settings] = await Promise.all([
              client.sql.unsafe(AS_LOGIN_SQL).simple(),
              raw(CAPTURE_SETTINGS_SQL),
              client.sql.unsafe(ROLLBACK_SQL).simple(),
            ])
            const restores = textRows(settings, 2).map(([name = '', restore = '']) => ({ name, restore }))
            if (conn !== undefined) conn.baseline = baselineOf(who, restores, login)
          })
    // Last, after onConnect: the reset checks for what holders leave, and what onConnect
    // prepared (SQL-level) is kept as the session's baseline.
    const opening = prepareCheck
      ? configured.then(async () => {
          const kept = textRows(await client.sql.unsafe(KEPT_STATEMENTS_SQL).simple().raw(), 2)
          const keptStatements = kept.map(([name = '', key = '']) => ({ name, key }))
          const [[dblink] = []] = textRows(await client.sql.unsafe(DBLINK_SQL).simple().raw(), 1)
          await client.sql.unsafe(prepareResetCheck(keptStatements, client.seedable, dblink)).simple()
        })
      : configured
    opening.catch(() => {})
    // Aborted by the caller's own deadline (a ping's): given up like at the opening's deadline.
    const abandon = () => giveUp(signal.reason === OPENING_DEADLINE ? 'error' : 'shutdown')
    signal.addEventListener('abort', abandon, { once: true })
    try {
      await Promise.race([opening, deadline])
    } catch (error) {
      void conn.end('error', 0)
      throw error
    } finally {
      clock.clearTimeout(timer)
      signal.removeEventListener('abort', abandon)
    }
    if (signal.aborted) throw Object.assign(new Error('the pool is closing'), { code: 'CONNECTION_ENDED' })
    conn.keepReported()
    return conn
  }
  if (hosts.length < 2) return (signal) => open(signal, connectTimeout)
  // A host list: each in turn, from the last that was the primary, until one is.
  return async (signal) => {
    const endsAt = clock.now() + connectTimeout
    let last: unknown
    for (let k = 0; k < hosts.length; k++) {
      const index = (preferred.index + k) % hosts.length
      const timeoutMs =
        settings.timeoutSpansHosts === true ? Math.max(1, (endsAt - clock.now()) / (hosts.length - k)) : connectTimeout
      try {
        const conn = await open(signal, timeoutMs, hosts[index])
        preferred.index = index
        return conn
      } catch (error) {
        last = error
        if (signal.aborted) break
      }
    }
    throw last
  }
}

const IN_RECOVERY_SQL = 'SELECT pg_catalog.pg_is_in_recovery() AS recovery'
