import type * as postgres from 'postgres'
import type { Clock } from './clock.js'
import type { Lsn } from './lsn.js'
import { parseLsn } from './lsn.js'
import type { ResolvedConnection } from './options.js'
import { createServerClient, rawText, type ServerClient } from './postgres-adapter.js'
import type { LsnSource, ReplicaSample } from './replica-monitor.js'

/** A sample that takes longer than this fails: a frozen server must not stall monitoring. */
export const SAMPLE_TIMEOUT_MS = 2_000

// Types and operators qualified: nothing resolves through the session's search_path.
const PRIMARY_SQL = 'SELECT pg_catalog.pg_current_wal_lsn()::pg_catalog.text AS lsn'
const REPLICA_SQL = `SELECT pg_catalog.pg_last_wal_replay_lsn()::pg_catalog.text AS replay, pg_catalog.pg_is_in_recovery() AS recovery,
  EXTRACT(epoch FROM pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp())::pg_catalog.float8 AS age`

// The server's system identifier: the same on a primary and every standby of it (and across a
// failover), another on a server of another cluster. Asked once per monitor connection, after
// asking whether the role may (EXECUTE on pg_control_system() can be revoked: the check is then
// left out, never the sample).
const SYSTEM_ALLOWED_SQL =
  "SELECT pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS allowed"
const SYSTEM_SQL = 'SELECT system_identifier::pg_catalog.text AS system FROM pg_catalog.pg_control_system()'

/** One dedicated connection (outside the lease pools), reopened after a failure, never after end(). */
class MonitorConnection {
  readonly #connection: ResolvedConnection
  readonly #applicationName: string
  readonly #clock: Clock
  #client: ServerClient | undefined
  /** The system identifier of the server #client reaches (read once per connection). */
  #system: Promise<string | undefined> | undefined
  #ended = false
  /** The primary's connection: a host list is followed to whichever host is the primary. */
  readonly #followsPrimary: boolean

  constructor(connection: ResolvedConnection, applicationName: string, clock: Clock, followsPrimary: boolean) {
    this.#connection = connection
    this.#applicationName = applicationName
    this.#clock = clock
    this.#followsPrimary = followsPrimary
  }

  async query<T>(text: string): Promise<T[]> {
    // A sample still running when the pool closes must not open a connection nobody ends.
    if (this.#ended) throw Object.assign(new Error('the monitor ended'), { code: 'MONITOR_ENDED' })
    const { hosts } = this.#connection
    // A new connection may reach another server (a host list, a restart behind the same name).
    if (this.#client === undefined) this.#system = undefined
    this.#client ??= createServerClient({
      url: this.#connection.url,
      options: {
        ...this.#connection.options,
        // A host list (the primary's, after a failover another host): tried in turn, the first
        // that is a primary kept, as the lease pools and LISTEN do; the URL names only the first.
        ...(this.#followsPrimary && hosts.length > 1
          ? {
              host: hosts.map((entry) => entry.host),
              port: hosts.map((entry) => entry.port),
              target_session_attrs: this.#connection.options.target_session_attrs ?? 'primary',
            }
          : {}),
        connect_timeout: SAMPLE_TIMEOUT_MS / 1000,
        connection: { ...this.#connection.options.connection, application_name: this.#applicationName },
        // postgres.js takes host and port lists (its typings say one).
      } as postgres.Options<{}>,
      onNotice: () => undefined,
      // postgres.js reopens a connection closed while idle by itself on the next query, without
      // a failure: that one may reach another server, whose system identifier is read anew.
      onClose: () => {
        this.#system = undefined
      },
    })
    const client = this.#client
    let timer: object | undefined
    try {
      return await Promise.race([
        // Raw: the app's parsers (its connection options are the monitor's too) must not change
        // what a sample reads (a bool read as 0/1 made every standby 'not a standby').
        client.sql.unsafe(text).raw() as unknown as Promise<T[]>,
        new Promise<never>((_, reject) => {
          timer = this.#clock.setTimeout(
            () => reject(Object.assign(new Error('no answer'), { code: 'SAMPLE_TIMEOUT' })),
            SAMPLE_TIMEOUT_MS,
          )
        }),
      ])
    } catch (error) {
      // Start over with a new connection next time (the server may have restarted or frozen).
      this.#client = undefined
      void client.end(0)
      throw error
    } finally {
      this.#clock.clearTimeout(timer)
    }
  }

  /** The server's system identifier; undefined when it cannot be read (not allowed, or failed: asked again next time). */
  system(): Promise<string | undefined> {
    if (this.#system !== undefined) return this.#system
    const reading = (async () => {
      const [allowed] = await this.query<Record<string, unknown>>(SYSTEM_ALLOWED_SQL)
      if (rawText(firstValues(allowed, 1)[0]) !== 't') return undefined
      const [row] = await this.query<Record<string, unknown>>(SYSTEM_SQL)
      return rawText(firstValues(row, 1)[0])
    })().catch(() => {
      if (this.#system === reading) this.#system = undefined
      return undefined
    })
    this.#system = reading
    return reading
  }

  end(): Promise<void> {
    this.#ended = true
    const client = this.#client
    this.#client = undefined
    return client?.end(0) ?? Promise.resolve()
  }
}

/** Replay positions read over a dedicated connection to each server. */
export class ServerLsnSource implements LsnSource {
  readonly #primary: MonitorConnection
  readonly #replicas: MonitorConnection[]
  /** The system identifier the primary's last sample showed (a failover keeps it, a new cluster does not). */
  #primarySystem: string | undefined

  constructor(
    primary: ResolvedConnection,
    replicas: readonly ResolvedConnection[],
    applicationName: string,
    clock: Clock,
  ) {
    const name = `${applicationName}/monitor`
    this.#primary = new MonitorConnection(primary, name, clock, true)
    this.#replicas = replicas.map((replica) => new MonitorConnection(replica, name, clock, false))
  }

  async primary(): Promise<Lsn> {
    const [row] = await this.#primary.query<Record<string, unknown>>(PRIMARY_SQL)
    const lsn = parseLsn(rawText(firstValues(row, 1)[0]))
    if (lsn === undefined) throw Object.assign(new Error('the primary is in recovery'), { code: 'NOT_PRIMARY' })
    this.#primarySystem = await this.#primary.system()
    return lsn
  }

  /**
   * Read after the primary's sample of the round (ReplicaMonitor.sample): `otherCluster` compares
   * with the system identifier that sample showed.
   */
  async replica(index: number): Promise<ReplicaSample> {
    const monitor = this.#replicas[index]
    if (monitor === undefined) throw new Error(`no replica ${index}`)
    const [row] = await monitor.query<Record<string, unknown>>(REPLICA_SQL)
    const [replay, recovery, age] = firstValues(row, 3).map(rawText)
    const seconds = age === undefined ? Number.NaN : Number(age)
    const system = await monitor.system()
    const primarySystem = this.#primarySystem
    return {
      replay: parseLsn(replay) ?? 0n,
      replayAgeSeconds: Number.isFinite(seconds) ? seconds : null,
      inRecovery: recovery === 't',
      otherCluster: system !== undefined && primarySystem !== undefined && system !== primarySystem,
    }
  }

  async end(): Promise<void> {
    await Promise.all([this.#primary.end(), ...this.#replicas.map((replica) => replica.end())])
  }
}

/**
 * A row's values in column order, whatever its keys: an app's column transform in the connection
 * options (`postgres.pascal`) renames the columns of the pool's own statements too.
 */
export function firstValues(row: Record<string, unknown> | undefined, count: number): unknown[] {
  const values = row === undefined ? [] : Object.values(row)
  return values.length === count ? values : []
}
