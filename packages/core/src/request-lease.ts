import { type ServerResponse, STATUS_CODES } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { errors } from './errors.js'
import { hungUp, watchClose } from './hang-up.js'
import type { Instance, Instances } from './instances.js'
import { type FinishMode, finished, type Lease } from './lease.js'
import type { Lsn } from './lsn.js'
import { createLeaseDb } from './query-api.js'
import type { ReadYourWrites } from './read-your-writes.js'
import { gateRawResponse, type RawFailure, type RawGate } from './reply-gate.js'
import { takeUnwritable } from './reply-headers.js'
import type { RouteSettingsCache } from './route-settings.js'
import type { RequestDb } from './types.js'

const kLease = Symbol('fastify-pg-pool.lease')
const kDb = Symbol('fastify-pg-pool.db')
/** Leases of the request on other instances (`request.dbs.<name>`), none of them a route transaction. */
const kOthers = Symbol('fastify-pg-pool.others')
const kDbs = Symbol('fastify-pg-pool.dbs')
/** The request is over for the database: a first use of request.db now is refused. */
const kEnded = Symbol('fastify-pg-pool.ended')
const kRequest = Symbol('fastify-pg-pool.request')
/** Read-your-writes of the instance request.db uses, when enabled: the token goes on the reply. */
const kTokens = Symbol('fastify-pg-pool.tokens')
/** A thrown error (onError): the request's work rolls back, whatever status the error handler sets. */
const kErrored = Symbol('fastify-pg-pool.errored')
/** An onSend of the request waits for the database (a COMMIT, a token): a second send is dropped. */
const kSending = Symbol('fastify-pg-pool.sending')
/** Transaction routes: the raw response's gate (reply-gate.ts), released by onSend. */
const kGate = Symbol('fastify-pg-pool.gate')
/** On the raw response: the request whose leases its early 'close' stops. */
const kOwner = Symbol('fastify-pg-pool.owner')

/** A lease of the request on another instance (or its replicas), and that instance's tokens. */
interface Other {
  readonly lease: Lease
  readonly db: RequestDb
  /** Read-your-writes of a named instance's primary lease (`request.dbs.<name>`), or null. */
  readonly tokens: ReadYourWrites | null
}

type LeaseRequest = FastifyRequest & {
  [kLease]: Lease | null
  [kDb]: RequestDb | null
  [kOthers]: Map<string, Other> | null
  [kDbs]: object | null
  [kEnded]: boolean
  [kTokens]: ReadYourWrites | null
  [kErrored]: boolean
  [kSending]: boolean
  [kGate]: RawGate | null
}

/** How the request's work ends once its reply is decided: rolled back on a thrown error or a status >= 400. */
function endMode(request: LeaseRequest, statusCode: number): 'commit' | 'rollback' {
  return statusCode >= 400 || request[kErrored] ? 'rollback' : 'commit'
}

/** A web Response as a payload: Fastify takes its status and streams its body after onSend. */
function isWebResponse(payload: unknown): payload is { status: number } {
  return (
    typeof payload === 'object' && payload !== null && Object.prototype.toString.call(payload) === '[object Response]'
  )
}

/** A web stream (getReader) or a web Response: what isStream must count, as Fastify streams them. */
function isWebStream(payload: unknown): boolean {
  return typeof (payload as { getReader?: unknown }).getReader === 'function' || isWebResponse(payload)
}

/** A payload Fastify streams: a Node stream, a web stream, a web Response's body. */
function isStream(payload: unknown): boolean {
  if (typeof payload !== 'object' || payload === null) return false
  return typeof (payload as { pipe?: unknown }).pipe === 'function' || isWebStream(payload)
}

/** A Node stream payload (not a web stream, whose reader Fastify takes). */
function isNodeStream(payload: unknown): payload is Readable {
  return (
    typeof payload === 'object' &&
    payload !== null &&
    typeof (payload as { pipe?: unknown }).pipe === 'function' &&
    typeof (payload as { on?: unknown }).on === 'function' &&
    !isWebStream(payload)
  )
}

/**
 * A streams2+ Readable, whose first chunk can be waited for without reading it ('readable'). A
 * legacy stream (a `Stream` that emits 'data' itself: `through`, `combined-stream`) has no buffer
 * to wait on: its first chunk would go by unheard.
 */
function isNodeReadable(payload: unknown): payload is Readable {
  return (
    isNodeStream(payload) &&
    typeof (payload as { read?: unknown }).read === 'function' &&
    typeof (payload as { readableLength?: unknown }).readableLength === 'number' &&
    typeof (payload as { destroy?: unknown }).destroy === 'function'
  )
}

/**
 * A streamed payload Fastify refuses when it sends it (it throws there): a Response whose body was
 * read or whose status is no HTTP status (`Response.error()`), a locked web stream, an object with
 * `pipe` but no `on` (its end-of-stream watcher refuses it). Known before the COMMIT: the work
 * rolls back and Fastify answers.
 */
function refusedByFastify(payload: unknown): boolean {
  if (isWebResponse(payload)) {
    const response = payload as unknown as Response
    // Response.error() has status 0: Fastify's reply.code() refuses it.
    if (response.status < 100 || response.status > 599) return true
    return response.body !== null && (response.bodyUsed || response.body.locked)
  }
  if (typeof (payload as { getReader?: unknown }).getReader === 'function') {
    return (payload as { locked?: unknown }).locked === true
  }
  return typeof (payload as { on?: unknown }).on !== 'function'
}

/** Up to a streamed payload's first chunk: what to send, or the error it failed with before that. */
interface FirstChunk {
  readonly failure?: Error | undefined
  readonly payload: unknown
  /**
   * Called just before the payload goes to Fastify: stops listening to the stream's errors, and
   * gives back the one it failed with meanwhile (after its first chunk, while the COMMIT ran).
   */
  readonly handOver?: (() => Error | undefined) | undefined
}

/**
 * Resolves once a Node stream has its first chunk ready (or ended): undefined; or with the error it
 * failed with before that. Nothing is read: Fastify pipes it afterwards, from its first chunk.
 */
function firstChunk(stream: Readable, cut: AbortSignal): Promise<FirstChunk> {
  // Closed before it ended: Fastify answers that with ERR_STREAM_PREMATURE_CLOSE.
  const closedEarly = () =>
    stream.errored ?? (stream.readableEnded ? undefined : new Error('the streamed payload closed before its end'))
  if (stream.errored || stream.destroyed) return Promise.resolve({ failure: closedEarly(), payload: stream })
  // Until Fastify listens: an 'error' nobody listens to is an uncaught exception (and the stream
  // reads ahead of its first chunk while the COMMIT runs).
  let late: Error | undefined
  const parked = (error: Error) => {
    late ??= error
  }
  const handOver = () => {
    stream.removeListener('error', parked)
    // Destroyed without an error before its end (an upstream closed early): Fastify answers that
    // with ERR_STREAM_PREMATURE_CLOSE, which after the COMMIT must cut the 2xx too.
    return late ?? (stream.destroyed ? closedEarly() : (stream.errored ?? undefined))
  }
  // Read by a 'data' listener of the app's (a byte counter; paused by onSend): not waited on, as a
  // 'readable' listener's removal would set it flowing again, its chunks lost to the response.
  const read = stream.listenerCount('data') > 0
  if (read) stream.pause()
  if (read || stream.readableLength > 0 || stream.readableEnded || stream.readableFlowing === true) {
    stream.on('error', parked)
    return Promise.resolve({ payload: stream, handOver })
  }
  return new Promise((resolve) => {
    const settle = (error?: Error) => {
      stream.removeListener('readable', onReadable)
      stream.removeListener('error', onError)
      stream.removeListener('close', onClose)
      cut.removeEventListener('abort', onCut)
      // Fastify never reads a stream that failed here: a later error of it goes nowhere.
      if (error !== undefined) {
        stream.on('error', () => {})
        resolve({ failure: error, payload: stream })
        return
      }
      stream.on('error', parked)
      resolve({ payload: stream, handOver })
    }
    const onReadable = () => settle()
    const onError = (error: Error) => settle(error)
    const onClose = () => settle(closedEarly())
    // The client hung up meanwhile, or the pool ended the transaction: nobody will read it
    // (Fastify destroys a payload it pipes).
    const onCut = () => stream.destroy()
    cut.addEventListener('abort', onCut)
    stream.on('error', onError)
    stream.on('close', onClose)
    stream.on('readable', onReadable)
    if (cut.aborted) onCut()
  })
}

type WebBody = ReadableStream<unknown>

/**
 * A web stream (or a web Response's body) read up to its first chunk: the payload to send instead
 * (the same chunks, from the first), or the error it failed with before that.
 */
async function firstWebChunk(payload: unknown, cut: AbortSignal): Promise<FirstChunk> {
  const response = isWebResponse(payload) ? (payload as unknown as Response) : undefined
  const body = (response === undefined ? payload : response.body) as WebBody | null
  if (body === null || body.locked) return { payload }
  const reader = body.getReader()
  const onCut = () => void reader.cancel(cut.reason).catch(() => {})
  cut.addEventListener('abort', onCut)
  if (cut.aborted) onCut()
  let first: { done: boolean; value?: unknown }
  try {
    first = await reader.read()
  } catch (error) {
    return { failure: error instanceof Error ? error : new Error(String(error)), payload }
  } finally {
    cut.removeEventListener('abort', onCut)
  }
  const again = new ReadableStream<unknown>({
    start(controller) {
      if (first.done) controller.close()
      else controller.enqueue(first.value)
    },
    async pull(controller) {
      try {
        const next = await reader.read()
        if (next.done) controller.close()
        else controller.enqueue(next.value)
      } catch (error) {
        controller.error(error)
      }
    },
    cancel: (reason) => reader.cancel(reason),
  })
  if (response === undefined) return { payload: again }
  const { status, statusText, headers } = response
  return { payload: new Response(again as ReadableStream<Uint8Array>, { status, statusText, headers }) }
}

/** A streamed payload up to its first chunk: what to send, or the error it failed with before. */
function untilFirstChunk(payload: unknown, cut: AbortSignal): Promise<FirstChunk> {
  if (isNodeReadable(payload)) return firstChunk(payload, cut)
  return firstWebChunk(payload, cut)
}

/** The status the reply goes out with: a web Response's own, which Fastify applies after onSend. */
function statusOf(reply: FastifyReply, payload: unknown): number {
  return isWebResponse(payload) && typeof payload.status === 'number' ? payload.status : reply.statusCode
}

/**
 * The answer the raw response's gate writes when the COMMIT failed or the transaction was ended
 * first: the body the default error handler would give (its reason phrase for the status), and the
 * error's own headers (Retry-After on a 503, as on every other path).
 */
function failureBody(error: unknown): RawFailure {
  const {
    statusCode = 500,
    code,
    message,
    headers,
  } = error as { statusCode?: number; code?: string; message?: string; headers?: Record<string, string> }
  return {
    statusCode,
    body: JSON.stringify({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message }),
    headers: headers ?? {},
  }
}

/**
 * Whether the request carries this plugin's decorators. A route of a context made before the core
 * was registered gets its hooks (Fastify hands a context the root hooks added later) but not its
 * request decorators: such a request has no lease, and is left alone.
 */
function ours(request: FastifyRequest): boolean {
  return (request as Partial<LeaseRequest>)[kLease] !== undefined
}

/**
 * A block the handler opened in SQL (or a `begin()` block, `inBegin`) and left open, which wrote
 * (Lease.leftBlockOpen): logged, and the reply's error.
 */
function leftOpen(request: FastifyRequest, inBegin = false, failure?: Error): Error {
  // Its COMMIT was out when the handler replied, and failed: the reply is that failure.
  if (failure !== undefined) return failure
  if (inBegin) {
    request.log.warn('the handler replied while a begin() block it opened was still running: rolled back')
    return new errors.FST_PG_POOL_COMMIT_FAILED(
      'a begin() block was still running when the handler replied; it was rolled back (await it before replying)',
    )
  }
  request.log.warn('the handler left a transaction block it opened in SQL open: rolled back')
  return new errors.FST_PG_POOL_COMMIT_FAILED(
    'a transaction block the handler opened in SQL was still open when it replied; it was rolled back (commit it, or use request.db.begin())',
  )
}

/**
 * Finishes the leases on other instances (never transactions), keeping them while a stream
 * reads. With `reply` (onSend): resolves once the leases of instances that give read-your-writes
 * tokens are back with their tokens on the reply, or returns undefined when none is to wait for.
 * `checks` gets the answer of each question whether a block the handler opened in SQL there was
 * left open having written (true: the reply becomes the error this resolves with).
 */
function finishOthers(
  request: LeaseRequest,
  mode: FinishMode,
  payload?: unknown,
  reply?: FastifyReply,
  checks?: Promise<boolean>[],
): Promise<Error | undefined> | undefined {
  const others = request[kOthers]
  if (others === null) return undefined
  // Kept while a stream reads: a token names what each wrote before the stream started.
  const streaming = payload !== undefined && isStream(payload) && mode !== 'abort'
  if (streaming && reply === undefined) return undefined
  let tokensWritten: Promise<void>[] | undefined
  let failure: Error | undefined
  for (const { lease, tokens } of others.values()) {
    if (streaming) {
      const position = tokens === null ? undefined : lease.positionSoFar()
      if (position === undefined) continue
      tokensWritten ??= []
      tokensWritten.push(
        position.then((lsn) => writeToken(request, reply as FastifyReply, tokens as ReadYourWrites, lsn)),
      )
    } else if (!lease.finished || mode === 'abort') {
      const inBegin = lease.openBegin
      const left = reply !== undefined && mode === 'commit' ? lease.leftBlockOpen() : undefined
      if (left !== undefined) {
        // As for request.db (onSend): a block the handler opened in SQL there and left open.
        checks?.push(left)
        tokensWritten ??= []
        tokensWritten.push(
          left.then((lost) => {
            if (lost) failure ??= leftOpen(request, inBegin, lease.blockFailure)
            return lease
              .finish('commit')
              .then(
                () =>
                  tokens === null || lost
                    ? undefined
                    : writeToken(request, reply as FastifyReply, tokens, lease.commitLsn),
                logFailure(request),
              )
          }),
        )
        continue
      }
      const finishing = lease.finish(mode === 'abort' ? 'abort' : 'commit')
      if (finishing === finished) continue
      if (tokens !== null && reply !== undefined && mode !== 'abort') {
        tokensWritten ??= []
        tokensWritten.push(
          finishing.then(() => writeToken(request, reply, tokens, lease.commitLsn), logFailure(request)),
        )
      } else finishing.catch(logFailure(request))
    }
  }
  return tokensWritten === undefined ? undefined : Promise.all(tokensWritten).then(() => failure)
}

/**
 * Sends the payload, unless the lease, ended, did not commit what a 2xx would claim: the reply is
 * then its error (FST_PG_POOL_ABORTED or _CLOSED, with Retry-After), and a streamed payload is
 * destroyed unsent.
 */
function sendUnlessLost(
  lease: Lease,
  mode: FinishMode,
  payload: unknown,
  send: (error: Error | null, payload?: unknown) => void,
): void {
  const lost = mode === 'commit' ? lease.notCommitted() : undefined
  if (lost === undefined) {
    send(null, payload)
    return
  }
  if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
  send(lost)
}

/**
 * The request is over for the database and its client is gone (or its response was destroyed):
 * what its leases run or wait for is stopped, and a route transaction rolls back.
 */
function abortLeases(request: LeaseRequest): void {
  request[kEnded] = true
  if (request[kOthers] !== null) finishOthers(request, 'abort')
  const lease = request[kLease]
  if (lease !== null) void lease.finish('abort').catch(() => {})
}

/**
 * The raw response closed (hang-up.ts, watchClose): cut before it was ended, the client hung up.
 * Sent whole by a not-found handler (`reply.callNotFound()`), its leases end now if nothing ended
 * them: that handler's context is the one where it was set, and when the plugin is registered in
 * a child context, its onResponse is not among that context's hooks (a stream sent from there held
 * its connection for good).
 */
function responseClosed(this: ServerResponse & { [kOwner]?: LeaseRequest }): void {
  const request = this[kOwner]
  if (request === undefined) return
  if (hungUp(this)) abortLeases(request)
  else if (request.is404) endLeases(request, endMode(request, this.statusCode))
}

/** The request is over: its leases end (`mode`), unless they already did. */
function endLeases(request: LeaseRequest, mode: 'commit' | 'rollback'): void {
  request[kEnded] = true
  if (request[kOthers] !== null) finishOthers(request, mode)
  const lease = request[kLease]
  if (lease !== null && !lease.finished) lease.finish(mode).catch(logFailure(request as FastifyRequest))
}

/**
 * A payload dropped because the handler wrote the response on reply.raw itself: if the handler
 * left that response open, nothing would end it (the client would wait for good). Fastify cuts a
 * response whose headers went before its send (its error handler destroys it); so is this one,
 * once the gate wrote what it held. Not for a send of nothing from an async handler that resolved
 * with nothing: Fastify makes it only because the gate holds the headers (it sends nothing once
 * they went), and the handler may end its response later (a pipe, server-sent events).
 */
function cutUnended(reply: FastifyReply, gate: RawGate | null | undefined, payload: unknown, errored: boolean): void {
  if (payload === undefined && !errored) return
  const cut = () => {
    if (reply.raw.writableEnded || reply.raw.destroyed) return
    // With an error: HTTP/2 resets the stream then (a stream destroyed without one ends cleanly,
    // and its client would take the cut response for a whole one). HTTP/1.1 cuts the socket either way.
    reply.raw.destroy('stream' in reply.raw ? new Error('the response was cut: its payload was dropped') : undefined)
  }
  if (gate == null) cut()
  else gate.whenWritten(cut)
}

/** Destroyed before it was sent: Node's response, or HTTP/2's (whose stream says it). */
function responseDestroyed(raw: { destroyed?: boolean; stream?: { destroyed?: boolean } }): boolean {
  return raw.destroyed === true || raw.stream?.destroyed === true
}

/** A request.signal abort that is a handlerTimeout (Fastify also aborts it when the request closes). */
function isHandlerTimeout(reason: unknown): boolean {
  return (reason as { code?: unknown } | null)?.code === 'FST_ERR_HANDLER_TIMEOUT'
}

function logFailure(request: FastifyRequest) {
  return (error: unknown) => request.log.error({ err: error }, 'returning the connection failed')
}

type Send = (error: Error | null, body?: unknown) => void

/**
 * A lease outside a transaction ends (its writes committed on their own), then the reply goes:
 * `now` when nothing is to wait for, `afterwards` once the position of its writes is on the reply
 * (read-your-writes).
 */
function finishPlain(
  lease: Lease,
  mode: FinishMode,
  payload: unknown,
  request: FastifyRequest,
  reply: FastifyReply,
  now: Send,
  afterwards: Send,
): void {
  const leased = request as LeaseRequest
  const tokens = leased[kTokens]
  const finishing = lease.finish(mode)
  if (finishing === finished || tokens === null) {
    if (finishing !== finished) finishing.catch(logFailure(request))
    now(null, payload)
    return
  }
  // Read-your-writes: the position of the request's writes goes on the reply.
  leased[kSending] = true
  finishing.then(
    () => {
      writeToken(request, reply, tokens, lease.commitLsn)
      afterwards(null, payload)
    },
    (error: unknown) => {
      logFailure(request)(error)
      afterwards(null, payload)
    },
  )
}

/** Puts a read-your-writes token on the reply; a failure is logged, never left unanswered. */
function writeToken(request: FastifyRequest, reply: FastifyReply, tokens: ReadYourWrites, lsn: Lsn | undefined): void {
  if (lsn === undefined) return
  try {
    tokens.write(reply, lsn)
  } catch (error) {
    request.log.error({ err: error }, 'the read-your-writes token could not be put on the reply')
  }
}

/**
 * `request.db`, `request.dbs` and the life of a request's leases in Fastify's lifecycle: leased
 * on the first query, returned when the request is over, on every path:
 * - `onSend`: the reply is decided. A route transaction commits here, before the first byte of
 *   any payload (a stream too: it cannot query after that); otherwise the lease goes back,
 *   except while a streamed payload still reads (then at `onResponse`).
 * - `onResponse`: the response ended (streams, hijacked replies): the backstop.
 * - `onRequestAbort` and handlerTimeout (the request's signal): statements are stopped.
 * After any of these, a first use of `request.db` is refused like a later one.
 * Registered once per app, for all its instances.
 */
export class RequestLeases {
  readonly #instances: Instances
  readonly #routes: RouteSettingsCache
  /** Getters of `request.dbs`, one per named instance (`this` is the request's object). */
  readonly #dbsProto: object = Object.create(null)

  constructor(instances: Instances, routes: RouteSettingsCache) {
    this.#instances = instances
    this.#routes = routes
  }

  /** Decorates `app`'s requests and adds the lifecycle hooks there (once per context that needs them). */
  wire(app: FastifyInstance): void {
    this.#register(app)
  }

  /**
   * Whether `app`'s requests are wired already (here, or in an ancestor context): told by a
   * decorator of the core's own, not by `db`, which an app may have of its own (Fastify then
   * refuses the core's, instead of the core leaving the app's in place and wiring nothing).
   */
  wiredIn(app: FastifyInstance): boolean {
    return app.hasRequestDecorator(kLease)
  }

  /** Makes `request.dbs.<name>` lease on the instance `name`. */
  addInstance(name: string): void {
    const leases = this
    Object.defineProperty(this.#dbsProto, name, {
      enumerable: true,
      get(this: { [kRequest]: LeaseRequest }) {
        return leases.#other(this[kRequest], name)
      },
    })
  }

  /** `settings`: the lease's, its route and request included (built once per request). */
  #lease(
    request: LeaseRequest,
    instanceName: string | undefined,
    settings: Lease['settings'],
    handlerTimeout: number | undefined,
  ) {
    const route = settings.route
    const instance = this.#instances.instance(instanceName, `route ${route}`)
    const lease = instance.newLease(settings)
    const db = createLeaseDb(lease, instance.api)
    if (instance.hasReplicas && settings.readOnly !== true) this.#addReplica(request, db, lease, instance, route)
    if (request[kEnded]) {
      // A first use after the request ended: refused like any use after the end.
      void lease.finish('rollback')
      return { lease, db, instance }
    }
    if ((handlerTimeout ?? 0) > 0) {
      // handlerTimeout aborts request.signal (an AbortController per request, only for such
      // routes): stop what runs or waits, and hand the lease back. Fastify aborts it too when the
      // request closes, which a request whose body was read does before its handler ends: that
      // is no timeout (a hang-up is the response's early close).
      const signal = request.signal
      signal.addEventListener(
        'abort',
        () => {
          if (isHandlerTimeout(signal.reason)) void lease.finish('abort').catch(() => {})
        },
        { once: true },
      )
    }
    return { lease, db, instance }
  }

  /**
   * `request.db.replica`: the request's reads on the instance's replicas (a lease of its own). With
   * read-your-writes on, once the request's own lease on the primary (`main`) wrote, its reads run
   * on that lease instead when they can (Lease.takesReadsAfterWrite): no replica can be known to
   * have the write, and a second primary connection for a request that holds one would wait on
   * the pool's `max` (a handle taken before the write is used after it too). Its `begin()` blocks
   * stay on the replica lease.
   */
  #addReplica(request: LeaseRequest, db: RequestDb, main: Lease, instance: Instance, route: string): void {
    Object.defineProperty(db, 'replica', {
      enumerable: false,
      get: () =>
        this.#keyed(request, `${instance.name ?? ''}\u0000replica`, () => {
          const replica = this.#lease(
            request,
            instance.name,
            { route, request, readOnly: true },
            request.routeOptions.handlerTimeout,
          )
          const leaseFor = () => (main.takesReadsAfterWrite ? main : replica.lease)
          return {
            ...replica,
            db: createLeaseDb(replica.lease, instance.api, false, undefined, leaseFor),
            tokens: null,
          }
        }),
    })
  }

  #keyed(request: LeaseRequest, key: string, create: () => Other): RequestDb {
    let others = request[kOthers]
    if (others === null) {
      others = new Map()
      request[kOthers] = others
    }
    let other = others.get(key)
    if (other === undefined) {
      other = create()
      others.set(key, other)
    }
    return other.db
  }

  #main(request: LeaseRequest): RequestDb {
    const existing = request[kDb]
    if (existing !== null) return existing
    // Fastify builds a new routeOptions object on every read: read it once.
    const routeOptions = request.routeOptions
    const route = routeOptions.url ?? 'unknown'
    const settings = this.#routes.of(routeOptions.config.db, route)
    if (settings.optedOut) throw new errors.FST_PG_POOL_ROUTE_OPTED_OUT(route)
    const { lease, db, instance } = this.#lease(
      request,
      settings.instance,
      { route, request, begin: settings.begin, pipelined: settings.pipelined, readOnly: settings.readOnly },
      routeOptions.handlerTimeout,
    )
    request[kLease] = lease
    request[kDb] = db
    if (instance.readYourWrites !== undefined && !settings.readOnly) request[kTokens] = instance.readYourWrites
    return db
  }

  #other(request: LeaseRequest, name: string): RequestDb {
    // The instance request.db already is (`instance: name`): the same lease, so the same
    // connection and the route's transaction, not a second lease that waits for a connection of
    // its own (a deadlock at `max: 1`) and commits apart from the route's work.
    if (this.#routeInstance(request) === name) return this.#main(request)
    return this.#keyed(request, name, () => {
      const routeOptions = request.routeOptions
      const route = routeOptions.url ?? 'unknown'
      if (routeOptions.config.db === false) throw new errors.FST_PG_POOL_ROUTE_OPTED_OUT(route)
      const { lease, db, instance } = this.#lease(request, name, { route, request }, routeOptions.handlerTimeout)
      return { lease, db, tokens: instance.readYourWrites ?? null }
    })
  }

  /** The instance the route's request.db uses (undefined: the default one). */
  #routeInstance(request: LeaseRequest): string | undefined {
    const routeOptions = request.routeOptions
    const config = routeOptions.config.db
    return config === false ? undefined : this.#routes.of(config, routeOptions.url ?? 'unknown').instance
  }

  #dbs(request: LeaseRequest): object {
    let dbs = request[kDbs]
    if (dbs === null) {
      dbs = Object.create(this.#dbsProto) as { [kRequest]: LeaseRequest }
      ;(dbs as { [kRequest]: LeaseRequest })[kRequest] = request
      request[kDbs] = dbs
    }
    return dbs
  }

  #register(app: FastifyInstance): void {
    const routes = this.#routes
    app.decorateRequest(kLease, null)
    app.decorateRequest(kDb, null)
    app.decorateRequest(kOthers, null)
    app.decorateRequest(kDbs, null)
    app.decorateRequest(kEnded, false)
    app.decorateRequest(kTokens, null)
    app.decorateRequest(kErrored, false)
    app.decorateRequest(kSending, false)
    app.decorateRequest(kGate, null)
    const leases = this
    app.decorateRequest('db', {
      getter(this: FastifyRequest) {
        return leases.#main(this as LeaseRequest)
      },
    })
    app.decorateRequest('dbs', {
      getter(this: FastifyRequest) {
        return leases.#dbs(this as LeaseRequest) as Record<string, RequestDb>
      },
    })

    // Transaction routes only: a write that reaches the raw response past onSend (a reply
    // hijacked in any hook or the handler, reply.raw written directly) waits for the COMMIT. Set
    // in the app's onRequest, ahead of the hooks added after the plugin (and of every route-level
    // hook), and for routes declared beside an un-awaited register too (an onRoute hook misses those).
    const gateRaw: onRequestHookHandler = (request, reply, done) => {
      if (!ours(request)) return done()
      // Before any use: a client gone before the first use of request.db makes that use refused,
      // and a lease taken in a hook that ran before this one is stopped too.
      const response = reply.raw as ServerResponse & { [kOwner]?: LeaseRequest }
      response[kOwner] = request as LeaseRequest
      watchClose(response, request.raw.socket, responseClosed)
      // Fastify builds a new routeOptions object on every read: read it once.
      const routeOptions = request.routeOptions
      let settings: ReturnType<typeof routes.of>
      try {
        settings = routes.of(routeOptions.config.db, routeOptions.url ?? 'unknown')
      } catch {
        // Refused on the first use of request.db, with its coded error.
        return done()
      }
      if (settings.begin === undefined) return done()
      ;(request as LeaseRequest)[kGate] = gateRawResponse(
        reply.raw,
        (statusCode) => {
          const leased = request as LeaseRequest
          leased[kEnded] = true
          const mode = endMode(leased, statusCode)
          finishOthers(leased, mode)
          const lease = leased[kLease]
          if (lease === null) return finished
          const lost = mode === 'commit' ? lease.notCommitted() : undefined
          if (lost !== undefined) return Promise.reject(lost)
          // finish() hands back the ending already under way (onSend's COMMIT of a reply sent
          // without being awaited): the raw write waits for it, and fails with it. Asked again
          // after it: an abort may have ended the transaction without its COMMIT meanwhile.
          return lease.finish(mode).then(() => {
            const ended = mode === 'commit' ? lease.notCommitted() : undefined
            if (ended !== undefined) throw ended
          })
        },
        (error) => {
          request.log.error({ err: error }, 'the route transaction of a reply written on reply.raw was not committed')
          return failureBody(error)
        },
        () => {
          if (!(request as LeaseRequest)[kSending]) return false
          request.log.warn('a reply written on reply.raw after the reply was decided was dropped')
          return true
        },
      )
      done()
    }
    app.addHook('onRequest', gateRaw)

    // Validates each route's config.db when it is declared.
    app.addHook('onRoute', (route) => {
      routes.of(route.config?.db, route.url)
    })

    // A thrown error rolls the request's work back even when the error handler answers < 400.
    app.addHook('onError', (request, _reply, _error, done) => {
      if (ours(request)) (request as LeaseRequest)[kErrored] = true
      done()
    })

    app.addHook('onSend', (request, reply, payload, hookDone) => {
      if (!ours(request)) return hookDone(null, payload)
      const leased = request as LeaseRequest
      if (leased[kSending]) {
        // A second send while the first waits for its COMMIT (`reply.send(x)` and then `return y`):
        // Fastify lets it through until the first is written. Dropped, as Fastify drops a send
        // after the reply went: it would leave before the COMMIT answered, and the first, written
        // after it, would throw.
        request.log.warn('Reply was already sent: the payload of a second send is dropped')
        return
      }
      // A stream flowing already (a 'data' listener of the app's, a byte counter): its chunks would
      // go by while the reply waits for the database (a COMMIT, a token, another instance), lost to
      // the response. Held until Fastify pipes it, which resumes it.
      // Given back flowing when the payload is handed on: a later onSend hook that reads it with a
      // 'data' listener (which does not resume a paused stream), or that replaces it (Fastify never
      // pipes it then), would leave it paused for good.
      const paused = isNodeReadable(payload) && payload.readableFlowing === true
      if (paused) payload.pause()
      const giveBack = () => {
        if (paused && (payload as Readable).readableFlowing === false && !(payload as Readable).destroyed) {
          ;(payload as Readable).resume()
        }
      }
      const gate = leased[kGate]
      if (gate?.written) {
        // The handler wrote the response on reply.raw itself (the gate holds it for the COMMIT).
        if (payload !== undefined || leased[kErrored]) {
          request.log.warn('the response was written on reply.raw: the payload sent after it is dropped')
        }
        giveBack()
        cutUnended(reply, gate, payload, leased[kErrored])
        return
      }
      const lease = leased[kLease]
      // The status decided now is the one the payload goes out with: one set later (by a second
      // send, which is dropped, or by an error handler after a throw) must not ride on it.
      const statusCode = statusOf(reply, payload)
      // A response destroyed before it was sent (reply.raw.destroy() in the handler) reaches no
      // client: its work is not committed, as after a hang-up.
      const mode = responseDestroyed(reply.raw) ? 'abort' : endMode(leased, statusCode)
      // Fastify writes the reply once the hook is done: past the gate, whose COMMIT ran here.
      const sendNow = ((error: Error | null, body?: unknown) => {
        gate?.release()
        giveBack()
        ;(hookDone as (error: Error | null, body?: unknown) => void)(error, body)
      }) as typeof hookDone & ((error: Error | null, body?: unknown) => void)
      // Called later than onSend (once the database answered): the second send above is held
      // off meanwhile; a reply someone wrote on reply.raw in between is left alone.
      const sendLater = (error: Error | null, body?: unknown) => {
        leased[kSending] = false
        if (reply.raw.headersSent || gate?.written === true) {
          request.log.warn('the response was written on reply.raw before the database answered')
          cutUnended(reply, gate, body, leased[kErrored])
          return
        }
        if (error === null && reply.statusCode !== statusCode && !isWebResponse(body)) reply.code(statusCode)
        try {
          sendNow(error, body)
        } catch (thrown) {
          // Node refused to write the reply (a header value it cannot send): Fastify's hook runner
          // catches that only inside onSend. Here, once the database answered, it would be an
          // unhandled rejection and no reply: the error reply goes instead, without the header.
          takeUnwritable(reply)
          sendNow(thrown as Error)
        }
      }
      const checks: Promise<boolean>[] = []
      const others = leased[kOthers] === null ? undefined : finishOthers(leased, mode, payload, reply, checks)
      if (others !== undefined) leased[kSending] = true
      // The reply goes once the other instances' tokens are on it too.
      const done =
        others === undefined
          ? sendNow
          : (((error?: Error | null, body?: unknown) => {
              void others.then((failure) => sendLater(error ?? failure ?? null, body))
            }) as typeof hookDone)
      const later = (others === undefined ? sendLater : done) as typeof sendLater
      if (lease === null) {
        // A streamed payload of a route without a transaction may still read with request.db.
        if (!isStream(payload) || routes.of(request.routeOptions.config.db, '').begin !== undefined) {
          leased[kEnded] = true
        }
        return done(null, payload)
      }
      if (lease.finished) {
        const lost = mode === 'commit' ? lease.notCommitted() : undefined
        if (lost === undefined) return done(null, payload)
        if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
        return done(lost)
      }
      const tokens = leased[kTokens]
      const probe = mode === 'commit' && !isStream(payload) ? lease.sharedProbe() : undefined
      if (probe !== undefined) {
        // Whether a message on its shared session left a transaction block is being asked: the
        // reply waits for the answer (a block means its work may go with the connection), and
        // the lease is held meanwhile, so that a block found tells it.
        leased[kEnded] = true
        leased[kSending] = true
        probe.then(() => {
          const broken = lease.notCommitted()
          lease.finish(broken === undefined ? mode : 'rollback').then(
            // Asked again: an abort may have come while the lease ended.
            () => sendUnlessLost(lease, mode, payload, later),
            (error: Error) => later(error),
          )
        })
        return
      }
      const broken = lease.pipelined && mode === 'commit' ? lease.notCommitted() : undefined
      if (broken !== undefined) {
        // A transaction block was opened on its shared session: what it did may be rolled back.
        leased[kEnded] = true
        lease.finish('rollback').catch(logFailure(request))
        if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
        return done(broken)
      }
      if (!lease.inTransaction) {
        // The connection stays with a streamed payload until it has been sent (onResponse); its
        // token, when it wrote, is the position of what it wrote so far.
        if (isStream(payload)) {
          const position = tokens === null ? undefined : lease.positionSoFar()
          if (position === undefined) return done(null, payload)
          leased[kSending] = true
          position.then((lsn) => {
            writeToken(request, reply, tokens as ReadYourWrites, lsn)
            later(null, payload)
          })
          return
        }
        leased[kEnded] = true
        const inBegin = lease.openBegin
        const left = mode === 'commit' ? lease.leftBlockOpen() : undefined
        if (left !== undefined) {
          // A block the handler opened in SQL and left open is rolled back with the connection's
          // reset: its work is not committed, and the reply says so instead of its 2xx.
          leased[kSending] = true
          left.then((open) => {
            if (!open) return finishPlain(lease, mode, payload, request, reply, later, later)
            lease.finish('rollback').catch(logFailure(request))
            later(leftOpen(request, inBegin, lease.blockFailure))
          })
          return
        }
        return finishPlain(lease, mode, payload, request, reply, done, later)
      }
      // A reply Node cannot write (a header it refuses) is known before the COMMIT: the work is
      // rolled back (the error reply that goes instead passes here again, as an error).
      const refused = mode === 'commit' ? takeUnwritable(reply) : undefined
      if (refused !== undefined) {
        giveBack()
        return hookDone(refused)
      }
      // The COMMIT before the first byte: a client never sees success for work not committed.
      leased[kEnded] = true
      if (mode === 'commit' && isStream(payload) && lease.runsCopyInto(payload, isWebStream(payload))) {
        // A COPY TO STDOUT of the transaction itself cannot be sent after its COMMIT, and the
        // COMMIT cannot come before it was read: nothing is committed, the client gets a 500.
        const refused = new errors.FST_PG_POOL_COMMIT_FAILED(
          'a COPY TO STDOUT cannot be the payload of a route transaction; send it from a route without one',
        )
        leased[kSending] = true
        lease.finish('rollback').then(
          () => later(refused),
          () => later(refused),
        )
        return
      }
      leased[kSending] = true
      const ending = lease
      const commitThenSend = (payload: unknown, handOver?: () => Error | undefined): void => {
        if (checks.length === 0 || mode !== 'commit') {
          commit(payload, handOver)
          return
        }
        // Another instance's lease is being asked whether a block the handler opened in SQL there
        // was left open having written: the reply is then a 500 that says the work was rolled
        // back (finishOthers), so the route transaction waits for the answer and rolls back too.
        void Promise.all(checks).then((lost) => {
          if (!lost.includes(true)) {
            commit(payload, handOver)
            return
          }
          handOver?.()
          if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
          const send = () => later(null)
          ending.finish('rollback').then(send, send)
        })
      }
      const commit = (payload: unknown, handOver?: () => Error | undefined): void => {
        ending.finish(mode).then(
          () => {
            // The COMMIT waited for a statement still running: a handlerTimeout or the pool's close
            // past closeTimeout may have ended the transaction meanwhile, without it.
            if (mode === 'commit' && ending.notCommitted() !== undefined) {
              handOver?.()
              return sendUnlessLost(ending, mode, payload, later)
            }
            if (tokens !== null) writeToken(request, reply, tokens, ending.commitLsn)
            const late = handOver?.()
            // Failed after its first chunk, while the COMMIT ran: the work is committed, so the
            // status goes out and the body is cut (Fastify cuts an errored stream once headers went).
            // Flushed when Fastify pipes the payload (its headers are on the response then), not when
            // this hook is done: a later onSend hook may still be running, and its headers with it.
            if (late !== undefined) {
              // Whatever is piped (a later hook may have wrapped it: a compression stream).
              const flush = () => {
                reply.raw.removeListener('pipe', flush)
                if (!reply.raw.headersSent && !reply.raw.destroyed) reply.raw.flushHeaders()
              }
              reply.raw.on('pipe', flush)
              reply.raw.once('close', () => reply.raw.removeListener('pipe', flush))
            }
            later(null, payload)
          },
          (error: Error) => {
            handOver?.()
            if (isStream(payload)) (payload as { destroy?: () => void }).destroy?.()
            later(error)
          },
        )
      }
      if (mode === 'commit' && isStream(payload) && refusedByFastify(payload)) {
        // Fastify throws when it sends it: rolled back first, then Fastify answers (sendLater).
        ending.finish('rollback').then(
          () => later(null, payload),
          () => later(null, payload),
        )
        return
      }
      if (mode === 'commit' && isStream(payload) && (isNodeReadable(payload) || isWebStream(payload))) {
        // Fastify answers a stream that fails before its first byte with an error reply: the
        // COMMIT waits until the stream has a first chunk (or ended), and a failure before rolls back.
        // A hang-up meanwhile stops the stream (the lease is rolled back by it), and so does the
        // pool ending the transaction (handlerTimeout, its close past closeTimeout).
        const cut = new AbortController()
        const onClose = () => {
          if (hungUp(reply.raw)) cut.abort()
        }
        reply.raw.once('close', onClose)
        const stopWatching = ending.onEnding(() => cut.abort())
        // Closed already (the client hung up before the handler returned): never read.
        if ((reply.raw as { closed?: boolean }).closed === true) onClose()
        void untilFirstChunk(payload, cut.signal).then(
          ({ failure, payload: ready, handOver }) => {
            reply.raw.removeListener('close', onClose)
            stopWatching()
            if (failure === undefined) return commitThenSend(ready, handOver)
            // Ended by the pool meanwhile: the reply says so (a 503), as when the handler waits.
            const endedByPool = ending.finished
            ending.finish('rollback').then(
              () => later((endedByPool ? ending.notCommitted() : undefined) ?? failure),
              () => later(failure),
            )
          },
          (error: Error) => {
            reply.raw.removeListener('close', onClose)
            stopWatching()
            ending.finish('rollback').then(
              () => later(error),
              () => later(error),
            )
          },
        )
        return
      }
      // A legacy stream (no buffer to wait on) goes after the COMMIT, as it comes.
      commitThenSend(payload)
    })

    // Backstop for replies that end after onSend (streams) or without it (hijacked).
    app.addHook('onResponse', (request, reply, done) => {
      if (!ours(request)) return done()
      // Node's HTTP/2 layer runs it for a stream the client reset too (it emits 'finish' then):
      // a hang-up, whichever of this hook and the response's close comes first.
      if (hungUp(reply.raw)) abortLeases(request as LeaseRequest)
      else endLeases(request as LeaseRequest, endMode(request as LeaseRequest, reply.statusCode))
      done()
    })

    app.addHook('onRequestAbort', (request, done) => {
      if (ours(request)) abortLeases(request as LeaseRequest)
      done()
    })
  }
}
