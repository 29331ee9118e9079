import type * as PostgresTypes from 'postgres'
import postgres from 'postgres'
import type { Clock, TimerHandle } from './clock.js'
import { connectFailure } from './error-mapping.js'
import { errors } from './errors.js'
import { invalidOption } from './option-kit.js'
import { chainedCallbacks, closeConnections } from './postgres-adapter.js'

/** A notification as PostgreSQL delivered it. */
export interface Notification {
  readonly channel: string
  readonly payload: string
}

/** Called with each notification of its channel; a throw or a rejection is logged, never fatal. */
export type NotificationHandler = (notification: Notification) => unknown

/** What `listen()` resolves with, once the channel is listened to on the server. */
export interface Listening {
  /** Stops this handler (the channel is unlistened when it was its last). Idempotent. */
  unlisten(): Promise<void>
}

/** The listener's counts, read by health and metrics through the view. */
export interface ListenerStats {
  /** Handlers registered with `listen()` and not unlistened. */
  readonly listeners: number
  /** Distinct channels they listen on. */
  readonly channels: number
  /** The listener's connection is open with every channel listened to (false while nothing listens). */
  readonly connected: boolean
  /** Notifications received on the listened channels (once each, whatever the number of handlers). */
  readonly notifications: number
  /** Times the channels were listened to again on a new connection after one was lost. */
  readonly reconnections: number
}

export const NO_LISTENER: ListenerStats = Object.freeze({
  listeners: 0,
  channels: 0,
  connected: false,
  notifications: 0,
  reconnections: 0,
})

/** Where and how the listener connects: the instance's connection, described by shape. */
export interface ListenerSettings {
  readonly url: string | undefined
  /** postgres.js options (a password function among them is called for each new connection). */
  readonly options: PostgresTypes.Options<{}>
  /** A multi-host primary (`host=a,b`): the LISTEN connection goes to the one that accepts writes. */
  readonly hosts?: readonly { readonly host: string; readonly port: number }[] | undefined
  readonly applicationName: string
  readonly clock: Clock
  /** ms, for each attempt to open the connection. */
  readonly connectTimeout: number
  /**
   * The most a listen() waits for its channel's LISTEN to be answered, connection included
   * (connectTimeout + statementTimeout + 1 s, as the pool's own statements): a server that
   * accepts the session and then freezes must not hold listen(), and an app's startup, for ever.
   */
  readonly listenTimeout: number
  /** PgBouncer in transaction mode keeps no session: a LISTEN there would hear nothing. */
  readonly pgbouncer: boolean
  readonly onNotice: (notice: PostgresTypes.Notice) => boolean | undefined
  /** Removes the connection's password from a text. */
  readonly redact: (text: string) => string
  /** Why the password function failed for the last connection (its login then failed: 28P01). */
  readonly passwordFailure?: (() => Error | undefined) | undefined
  readonly onHandlerError: (error: unknown, channel: string) => void
  /** The connection was lost (`false`), or the channels are listened to again on a new one (`true`). */
  readonly onConnectedChange: (connected: boolean) => void
}

/** PostgreSQL truncates identifiers at NAMEDATALEN - 1 bytes; pg_notify refuses longer channels. */
const MAX_CHANNEL_BYTES = 63

/**
 * Longest wait between attempts to reopen a lost connection, in seconds. postgres.js's own
 * backoff grows to 20 s: notifications sent that long after the server came back would be lost.
 * One connection trying every two seconds costs a server nothing.
 */
const RECONNECT_MAX_DELAY_S = 2

/**
 * Wait before a new connection when the server refused the LISTEN on an open one (a standby during
 * a failover answers 25006): the promotion takes about a second.
 */
export const REFUSED_RETRY_MS = 1_000

/** How often an ended client is closed again while a connection it owes may still open (#sweep). */
const SWEEP_EVERY_MS = 100

/** postgres.js's backoff (seconds, from the attempt number, with jitter), capped. */
function reconnectDelay(attempt: number): number {
  return (0.5 + Math.random() / 2) * Math.min(3 ** attempt / 100, RECONNECT_MAX_DELAY_S)
}

function listenStatement(channel: string): string {
  return `LISTEN "${channel.replace(/"/g, '""')}"`
}

/**
 * The connection only waits for notifications, and a notification does not restart the server's
 * idle timer: an `idle_session_timeout` of the role or database (PostgreSQL 14 and later; older
 * servers have no such setting, and the condition skips it) would close it every period, losing
 * what is sent meanwhile. Sent with every LISTEN, so that a new connection has it too.
 */
const NO_IDLE_SESSION_TIMEOUT =
  "SELECT pg_catalog.set_config('idle_session_timeout', '0', false) WHERE pg_catalog.current_setting('idle_session_timeout', true) IS NOT NULL"

/** LISTEN to `channels`, on a session the server will not close for its idleness. */
function listenMessage(channels: readonly string[]): string {
  return [NO_IDLE_SESSION_TIMEOUT, ...channels.map(listenStatement)].join('; ')
}

interface Subscription {
  readonly handler: NotificationHandler
}

interface Channel {
  readonly subscriptions: Set<Subscription>
  /** The channel's first LISTEN. */
  readonly ready: Promise<void>
}

/**
 * LISTEN/NOTIFY on a connection of its own, outside the lease pool: a lease is reset (UNLISTEN *)
 * when it goes back, and a notification arrives between statements, which no request waits for.
 *
 * postgres.js's `sql.listen` re-subscribes after a lost connection too, but on an inner client
 * whose `onclose` it keeps to itself: nothing outside can tell that the connection is down. Here
 * the client is ours (`onclose` and `onnotify`, which `sql.listen` itself is built on), so the
 * state is known, and every channel is listened to again in one statement, one attempt at a
 * time, with postgres.js's reconnect backoff (capped) between them.
 */
export class Listener {
  readonly #settings: ListenerSettings
  readonly #channels = new Map<string, Channel>()
  #client: PostgresTypes.Sql<{}> | undefined
  /** Open with every channel listened to. */
  #connected = false
  /** Has been connected since something started listening: a loss is then a reconnection to come. */
  #wasConnected = false
  #resubscribing = false
  /** The connection closed again while a resubscription was under way. */
  #closedMeanwhile = false
  #closed = false
  #retry: TimerHandle | undefined
  #listeners = 0
  #notifications = 0
  #reconnections = 0

  constructor(settings: ListenerSettings) {
    this.#settings = settings
  }

  /** Resolves once `channel` is listened to on the server; rejects (coded) when it cannot be. */
  async listen(channel: string, handler: NotificationHandler): Promise<Listening> {
    if (this.#closed) throw new errors.FST_PG_POOL_CLOSED()
    if (
      typeof channel !== 'string' ||
      channel === '' ||
      Buffer.byteLength(channel) > MAX_CHANNEL_BYTES ||
      channel.includes('\u0000')
    ) {
      // A NUL ends the statement's text for the server: refused here, not as a failed LISTEN.
      throw invalidOption('listen(channel)', `expected a channel name of 1 to ${MAX_CHANNEL_BYTES} bytes, without NUL`)
    }
    if (typeof handler !== 'function') {
      throw invalidOption('listen(channel, onNotify)', 'expected a function (notification) => void')
    }
    if (this.#settings.pgbouncer) {
      throw invalidOption(
        'pool.pgbouncer',
        'LISTEN needs a session of its own, which PgBouncer in transaction mode does not keep: notifications would be lost',
      )
    }
    const subscription: Subscription = { handler }
    let entry = this.#channels.get(channel)
    if (entry === undefined) {
      const ready = this.#run(listenMessage([channel]))
      entry = { subscriptions: new Set(), ready }
      this.#channels.set(channel, entry)
    }
    entry.subscriptions.add(subscription)
    this.#listeners++
    try {
      await this.#withinListenTimeout(entry.ready)
    } catch (error) {
      void this.#remove(channel, entry, subscription, false)
      if (this.#closed) throw new errors.FST_PG_POOL_CLOSED()
      // The login failed with an empty password when the function did: its reason is the cause.
      throw connectFailure(this.#settings.passwordFailure?.() ?? error, this.#settings.redact)
    }
    if (!this.#connected && !this.#wasConnected && this.#client !== undefined && !this.#resubscribing) {
      this.#connected = true
      this.#wasConnected = true
    }
    const listened = entry
    let active = true
    return {
      unlisten: async () => {
        if (!active) return
        active = false
        await this.#remove(channel, listened, subscription, true)
      },
    }
  }

  #withinListenTimeout(ready: Promise<void>): Promise<void> {
    const { clock, listenTimeout } = this.#settings
    let timer: TimerHandle | undefined
    return Promise.race([
      ready,
      new Promise<never>((_, reject) => {
        timer = clock.setTimeout(
          () => reject(Object.assign(new Error(`no answer within ${listenTimeout} ms`), { code: 'LISTEN_TIMEOUT' })),
          listenTimeout,
        )
      }),
    ]).finally(() => clock.clearTimeout(timer))
  }

  stats(): ListenerStats {
    if (this.#listeners === 0 && this.#notifications === 0 && this.#reconnections === 0) return NO_LISTENER
    return {
      listeners: this.#listeners,
      channels: this.#channels.size,
      connected: this.#connected,
      notifications: this.#notifications,
      reconnections: this.#reconnections,
    }
  }

  /** Ends the connection and every subscription; later `listen()` calls are refused. */
  async close(): Promise<void> {
    this.#closed = true
    for (const entry of this.#channels.values()) entry.subscriptions.clear()
    this.#channels.clear()
    this.#listeners = 0
    await this.#endClient()
  }

  async #remove(channel: string, entry: Channel, subscription: Subscription, unlisten: boolean): Promise<void> {
    if (!entry.subscriptions.delete(subscription)) return
    this.#listeners--
    if (entry.subscriptions.size > 0 || this.#channels.get(channel) !== entry) return
    this.#channels.delete(channel)
    // Nothing listens any more: the connection goes (closing it unlistens everything).
    if (this.#channels.size === 0) return this.#endClient()
    if (unlisten) await this.#run(`UN${listenStatement(channel)}`).catch(() => {})
  }

  /** Runs one statement on the listener's connection (opened on first use). */
  async #run(text: string): Promise<void> {
    await this.#clientNow().unsafe(text)
  }

  #clientNow(): PostgresTypes.Sql<{}> {
    if (this.#client !== undefined) return this.#client
    const { url, options, hosts = [], applicationName, connectTimeout, onNotice } = this.#settings
    let client: PostgresTypes.Sql<{}> | undefined
    const clientOptions = {
      ...options,
      // After a failover the primary is another host: postgres.js tries them in turn on each
      // attempt and skips one in recovery (where LISTEN is refused). Not 'read-write': postgres.js
      // judges it by default_transaction_read_only, which a standby reports 'off'.
      ...(hosts.length > 1
        ? {
            host: hosts.map((entry) => entry.host),
            port: hosts.map((entry) => entry.port),
            target_session_attrs: options.target_session_attrs ?? 'primary',
          }
        : {}),
      max: 1,
      // null, not undefined: postgres.js would otherwise retire the connection on its own timers.
      idle_timeout: null as unknown as undefined,
      max_lifetime: null,
      // Stated: postgres.js would read PGDEBUG (query parameters enumerable on errors, so logged).
      debug: false,
      // LISTEN parses no values.
      fetch_types: false,
      connect_timeout: connectTimeout / 1000,
      backoff: reconnectDelay,
      connection: { ...options.connection, application_name: applicationName },
      onnotify: (channel: string, payload: string) => this.#dispatch(channel, payload),
      ...chainedCallbacks(options, onNotice, () => {
        if (client !== undefined) this.#lost(client)
      }),
    } as PostgresTypes.Options<{}>
    client = url === undefined ? postgres(clientOptions) : postgres(url, clientOptions)
    this.#client = client
    this.#connected = false
    return client
  }

  async #endClient(): Promise<void> {
    const client = this.#client
    this.#client = undefined
    const wasConnected = this.#connected
    this.#connected = false
    this.#wasConnected = false
    this.#resubscribing = false
    this.#closedMeanwhile = false
    this.#settings.clock.clearTimeout(this.#retry)
    this.#retry = undefined
    if (wasConnected && !this.#closed && this.#listeners > 0) this.#settings.onConnectedChange(false)
    if (client === undefined) return
    await client.end({ timeout: 0 }).catch(() => {})
    // Connected, it had no other connection on its way: ended, nothing can open after it (the
    // common case, a last unlisten: no sweep timers piling up with the listen rate).
    if (!wasConnected) this.#sweep(client)
  }

  /**
   * postgres.js's end() does not stop a connection already on its way: a reconnect it scheduled
   * (its backoff after a lost connection) or an opening still in its TCP handshake completes after
   * the end, and nothing would close it (no idle timeout here): a backend left on the server, the
   * process kept alive. The ended client is closed again until such a connection can no longer
   * open (its connect timeout and the longest backoff), on timers that keep nothing alive.
   */
  #sweep(client: PostgresTypes.Sql<{}>): void {
    const { clock, connectTimeout } = this.#settings
    const until = clock.now() + connectTimeout + RECONNECT_MAX_DELAY_S * 1000
    const again = () => {
      void closeConnections(client)
      if (clock.now() < until) clock.setTimeout(again, SWEEP_EVERY_MS)
    }
    clock.setTimeout(again, SWEEP_EVERY_MS)
  }

  #dispatch(channel: string, payload: string): void {
    const entry = this.#channels.get(channel)
    if (entry === undefined) return
    this.#notifications++
    const notification: Notification = Object.freeze({ channel, payload })
    for (const { handler } of [...entry.subscriptions]) {
      try {
        const result = handler(notification)
        if (result instanceof Promise) result.catch((error: unknown) => this.#settings.onHandlerError(error, channel))
      } catch (error) {
        this.#settings.onHandlerError(error, channel)
      }
    }
  }

  /**
   * The connection closed (the server restarted, the backend was terminated, the network cut):
   * the server forgot every LISTEN. Listen again on a new connection; postgres.js opens it for
   * the statement, after its backoff when the last attempt failed.
   */
  #lost(client: PostgresTypes.Sql<{}>): void {
    if (this.#closed || client !== this.#client) return
    if (this.#connected) {
      this.#connected = false
      this.#settings.onConnectedChange(false)
    }
    this.#resubscribe(client)
  }

  #resubscribe(client: PostgresTypes.Sql<{}>): void {
    // One attempt at a time: a failed one closes the connection again, and that close (before or
    // after the failure is seen) starts the next.
    if (this.#resubscribing) {
      this.#closedMeanwhile = true
      return
    }
    const channels = [...this.#channels.keys()]
    if (channels.length === 0) return
    this.#resubscribing = true
    this.#closedMeanwhile = false
    client.unsafe(listenMessage(channels)).then(
      () => {
        this.#resubscribing = false
        if (client !== this.#client || this.#closed) return
        this.#connected = true
        if (this.#wasConnected) this.#reconnections++
        this.#wasConnected = true
        this.#settings.onConnectedChange(true)
      },
      () => {
        this.#resubscribing = false
        if (client !== this.#client || this.#closed) return
        if (this.#closedMeanwhile) this.#resubscribe(client)
        else this.#retryOnNewConnection(client)
      },
    )
  }

  /**
   * The server refused the LISTEN and the connection stays open (no close will start another
   * attempt): drop it, and listen again on a new one shortly, which postgres.js may open to
   * another host.
   */
  #retryOnNewConnection(client: PostgresTypes.Sql<{}>): void {
    this.#client = undefined
    void client
      .end({ timeout: 0 })
      .catch(() => {})
      .then(() => this.#sweep(client))
    this.#retry = this.#settings.clock.setTimeout(() => {
      this.#retry = undefined
      if (this.#closed || this.#channels.size === 0) return
      this.#resubscribe(this.#clientNow())
    }, REFUSED_RETRY_MS)
  }
}
