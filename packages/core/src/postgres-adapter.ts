import type { Readable, Writable } from 'node:stream'
import type * as PostgresTypes from 'postgres'
import postgres from 'postgres'
import { SEED_FUNCTIONS } from './session-reset.js'

/**
 * The one module that knows postgres.js's internals (3.4.x). Each assumption below is pinned by
 * packages/core/test/postgres-adapter.contract.test.ts, so an upgrade that breaks one fails a
 * named test instead of a request in production:
 *
 * 1. A query is a `Query` (a Promise subclass) whose class is reachable as the constructor of any
 *    query; `new Query(strings, args, handler, canceller, options)`; postgres.js calls
 *    `handler(query)` once when the query runs (then/execute/forEach/cursor), and settles it
 *    by calling `query.resolve(value)` / `query.reject(error)`, own properties that it assigns
 *    in the constructor and again per batch for cursors.
 * 2. A client's `handler` and `canceller` are those of any query it builds: calling the handler
 *    with our own Query sends it on that client; the canceller sends a CancelRequest for
 *    `query.state` (the backend's pid and secret key, set once a query ran) when `active`.
 * 3. After a query was built, `query.string` is its text with `$n` placeholders.
 * 4. Results carry `command` (the command tag) and `count`; a COPY query resolves twice: first
 *    with its stream, then with its result.
 * 4b. A cursor's batches go to `query.cursorFn(rows)` (assigned by `cursor()`, again per batch by
 *    its iterator); the next batch is fetched when what it returns settles: a rejection writes
 *    Sync and rejects the query, but leaves the connection's row counter past the batch (the
 *    next statement's rows would come after empty slots), so the adapter never rejects there:
 *    it answers `sql.CLOSE`, which resets the counter and closes the portal, and the query
 *    fails afterwards. Either writes on the socket, so neither may happen once the connection
 *    is closed (postgres.js would write to a null socket and throw, uncaught).
 * 4d. A COPY TO STDOUT stream's own `_read()` resumes postgres.js's socket, which it pauses when
 *    the stream's buffer is full; once CopyDone has ended the stream nothing calls `_read()`
 *    again, so a socket paused by the last rows stays paused and no later answer on the
 *    connection (a COMMIT, the reset) is ever read. The adapter calls it once the COPY ended.
 * 4e. postgres.js pushes a COPY TO STDOUT's rows into its stream with `stream.push(rows) ||
 *    socket.pause()`, a call on the stream object (which can be replaced on it).
 * 4f. postgres.js fails a COPY's stream with `stream.destroy(error)`, a call on the stream object
 *    (its own error for a lost connection, with the server's host and port in its message).
 * 4g. A COPY FROM STDIN its writer ended (CopyDone sent) and the server then refused: postgres.js
 *    fails the query, and leaves the stream, whose end waits for the CommandComplete, as it is.
 * 4h. A throw while postgres.js reads a query's answer (a forEach callback, a type parser in
 *    `options.parsers`, a `transform` `from` function) rejects the query at once with that error,
 *    while its statement runs on; postgres.js goes on reading its rows into it and settles it
 *    again at ReadyForQuery (or with the server's error, or the connection's loss). For a cursor
 *    it also writes a Sync of its own, and another at the cursor's end.
 * 4c. `cursor(rows)` without a callback returns `{ [Symbol.asyncIterator]() { next, return } }`,
 *    whose `next()` answers `{ done: true }` once the query is no longer active, even when it
 *    ended with an error between two batches.
 * 5. `options.fetch_types` is read per connection; `options.parsers`, `options.serializers` and
 *    `options.shared.typeArrayMap` hold the per-client type codecs.
 * 6. `onnotice` receives notices; `onclose` fires when the connection closes.
 * 7. `sql.close()` (not in the typings) ends every connection the client holds open now, also
 *    after `end()` resolved: `end()` keeps its first promise and does nothing again, while a
 *    reconnect postgres.js scheduled before it (its backoff after a lost connection) still opens
 *    a connection afterwards.
 * 8. A query postgres.js cannot build (an undefined value, more than 65534 parameters, a
 *    serializer that throws) fails synchronously inside `handler(query)`: postgres.js 3.4.9 rejects the
 *    connection's *active* query with the error, not the one it could not build, when one is
 *    active; the one it could not build then stays in its queue of sent queries without having
 *    been written, and would take the answer of whatever is sent after it. With nothing active
 *    it rejects the query itself and writes a Sync. The adapter takes such a rejection back
 *    from the query that did not cause it (`send`), fails the right one, and says the
 *    connection can take nothing more. (3.4.10 rejects the query itself and sends nothing of it:
 *    the same path gives it its error, and the connection stays usable.)
 * 8b. After a query it describes first (a statement with parameters not yet prepared on the
 *    connection; every one with `prepare: false`) or a cursor, postgres.js queues what is sent
 *    until that query ends, and builds it then, where 8's failure would reject whatever is
 *    active and leave answers to cross. The adapter holds such queries itself (`describeFirst`
 *    and `cursorFn`, read once the query was handed over) and hands them over when it ended.
 * 9. When postgres.js writes a query it sets `query.prepare` (it runs as a named statement kept on
 *    the connection) and `query.prepared` (that statement was on the connection already), and
 *    sets `query.parsing = false` on the server's ParseComplete: a query with `prepare`, not
 *    `prepared`, and `parsing === false` added one to the server's `pg_prepared_statements`,
 *    which postgres.js never deallocates (the pool counts them: `maxPreparedStatements`); one
 *    whose Parse the server refused added none.
 */

export type QueryHandler = (query: AdapterQuery) => void
type Canceller = (query: { state: BackendKey; active: boolean }) => Promise<void>

/** The backend a connection talks to: what a CancelRequest names. */
export interface BackendKey {
  readonly pid: number
  readonly secret: number
}

/** A postgres.js query, seen from the inside. */
export interface AdapterQuery extends Promise<unknown> {
  strings: readonly string[]
  args: unknown[]
  executed: boolean
  options: { simple?: boolean; prepare?: boolean }
  /** Set by postgres.js for cursors and forEach: rows are handed out while the query runs. */
  cursorFn?: unknown
  forEachFn?: unknown
  /** Set by COPY (`readable()`/`writable()`): the first resolve hands out a stream. */
  streaming?: boolean
  /**
   * Set by postgres.js when it writes the query: `prepare`, it runs as a named statement kept on
   * the connection; `prepared`, that statement was there already; `parsing`, set false when the
   * server completed its Parse (ParseComplete) (assumption 9).
   */
  prepare?: boolean
  prepared?: boolean
  parsing?: boolean
  cancel(): unknown
  resolve(value: unknown): void
  reject(error: unknown): void
}

/** What the lease keeps on each query it built. */
export interface TrackedQuery extends AdapterQuery {
  /** The lease that built it. */
  owner: QueryOwner
  /** Sent by the onLease hook: runs before the holder's own queries. */
  setup: boolean
  /** Sent by the suite itself (BEGIN, COMMIT, ROLLBACK): not a statement of the holder. */
  internal: boolean
  /** The route transaction's COMMIT or ROLLBACK: the one statement sent after the holder finished. */
  final: boolean
  /** The `begin()` block whose handle built it (its token), or undefined: allowed while that block is open. */
  block: object | undefined
  /** A step of `savepoint()` (SAVEPOINT, RELEASE, ROLLBACK TO): not the holder ending its block. */
  savepointStep: boolean
  /** Its connection died under it before it ran: it will be sent again elsewhere. */
  redirected: boolean
  /**
   * When it was sent, on the pool's clock (the statement deadline counts from it); for a message
   * of several statements, plus statementTimeout for each statement ahead of its last.
   */
  startedAt: number
  innerResolve: (value: unknown) => void
  innerReject: (error: unknown) => void
  /** The cursor callback postgres.js was given (reached through `cursorFn`). */
  innerCursorFn: ((rows: unknown) => unknown) | undefined
  /** The forEach callback postgres.js was given (reached through `forEachFn`). */
  innerForEachFn: ((row: unknown, result: unknown) => void) | undefined
  /** What it failed with, as its caller sees it (a cursor's next batch reports it). */
  failure: unknown
  /** Why its cursor was stopped (a callback that failed, an abort): it fails with it once closed. */
  stoppedBy: unknown
  /** Its end went through the owner (postgres.js may settle a query more than once). */
  ended: boolean
  /** Per-operation state of observers (diagnostics message), set while it runs. */
  observed: unknown
  /** The stream a COPY handed out (a Writable for FROM STDIN, a Readable for TO STDOUT). */
  stream: Readable | Writable | undefined
  /** Runs once when it ends (its client hands over what waited behind it: 8b). */
  onEnd: (() => void) | undefined
}

/** Where a tracked query reports its end; returns what its caller should see. */
export interface QueryOwner {
  settled(query: TrackedQuery, value: unknown, error: unknown): unknown
  /**
   * A cursor batch was handed to its callback, which returned `result`: what postgres.js
   * waits on before it fetches the next batch (the owner can stop the cursor there).
   */
  cursorBatch(query: TrackedQuery, result: unknown): unknown
  /** An error postgres.js put on the query's COPY stream: what the stream's reader should see. */
  streamError(query: TrackedQuery, error: Error): Error
}

/** postgres.js's query constructor, then the tracked query's own two: its owner and `setup`. */
export type TrackedQueryConstructor = new (
  strings: readonly string[],
  args: unknown[],
  handler: QueryHandler,
  canceller: (query: AdapterQuery) => unknown,
  options: object | undefined,
  owner: QueryOwner,
  setup: boolean,
) => TrackedQuery

function ignoreError(): void {}

/**
 * Ends a COPY whose holder is gone (its stream is the holder's to drive, so nothing else would):
 * a FROM STDIN not ended is failed (CopyFail: none of its rows is written); a TO STDOUT not read
 * to the end is read on, to nobody (a 'data' listener keeps chunks from queueing in the stream),
 * and 'cancel' says the server must be told to stop; 'close' says only closing the connection
 * ends it: one sent with the extended protocol (a plain query, not readable()/writable()), since
 * the server ignores the Sync sent with it while the COPY runs and waits for another, which
 * postgres.js never sends. The stream gets an error listener: the holder that would have
 * listened is gone. Undefined for a query that is not a COPY, or a COPY that ends by itself.
 */
export function abandonCopy(query: TrackedQuery, reason?: () => Error): 'cancel' | 'close' | undefined {
  const stream = query.stream
  if (stream === undefined) return undefined
  stream.on('error', ignoreError)
  if (query.options.simple !== true) return 'close'
  if ('writableEnded' in stream) {
    // With the lease's reason (the pool closing, the request gone): a `pipeline()` into it
    // rejects with that, not with a premature close.
    if (!stream.destroyed && !stream.writableEnded) stream.destroy(reason?.())
    return undefined
  }
  if (stream.readableEnded) return undefined
  // Destroyed by its reader (a `break` out of its loop), it is read on all the same (4e).
  if (!stream.destroyed) {
    stream.on('data', ignoreError)
    stream.resume()
  } else resumeSocket(stream)
  return 'cancel'
}

/**
 * A COPY TO STDOUT stream destroyed while its COPY runs (its reader broke out of its loop):
 * postgres.js pauses its socket whenever `push` answers false, which a destroyed stream always
 * does, and nothing would resume it: the server then waits to write (ClientWrite) for good, and
 * the connection with it. Its rows go nowhere instead, and the socket keeps reading (4e).
 */
function readOnWhenDestroyed(stream: Readable): void {
  const push = stream.push
  stream.push = function (this: Readable, chunk: unknown, encoding?: BufferEncoding): boolean {
    return this.destroyed ? true : push.call(this, chunk, encoding)
  }
  // A push before the destroy may have paused the socket already: it reads again now (4d).
  stream.once('close', () => resumeSocket(stream))
}

/**
 * postgres.js fails a COPY's stream with `stream.destroy(error)`: its own error when the
 * connection is lost (a message with the server's host and port), the server's when the COPY
 * fails; a write the socket refused takes the same way (Node's Writable destroys itself with it).
 * The stream's reader gets the pool's error instead, as a query's caller does (the driver's as
 * its cause). Errors of the holder's own (a source that failed in `pipeline`) pass unchanged
 * (assumption 4f, with contract tests).
 */
function surfaceStreamErrors(query: TrackedQuery, stream: Readable | Writable): void {
  const destroy = stream.destroy as (this: Readable | Writable, error?: Error) => Readable | Writable
  stream.destroy = function (this: Readable | Writable, error?: Error | null) {
    const out = error === undefined || error === null ? undefined : query.owner.streamError(query, error)
    return destroy.call(this, out)
  } as typeof stream.destroy
}

/** Resumes the socket a COPY TO STDOUT stream paused (4d); nothing when it is gone already. */
function resumeSocket(stream: Readable): void {
  try {
    ;(stream as unknown as { _read(size: number): void })._read(0)
  } catch {
    // The connection's socket is gone already: nothing is left to read.
  }
}

/**
 * A COPY TO STDOUT failed (its connection lost or cut): its socket is made to read again (4d),
 * so that a server still writing to a connection that is being closed is read to the end rather
 * than left waiting, and a graceful close can finish.
 */
export function resumeFailedCopy(query: TrackedQuery): void {
  const stream = query.stream
  if (stream === undefined || 'writableEnded' in stream) return
  resumeSocket(stream)
}

/**
 * A COPY TO STDOUT ended on the server: its socket reads again (assumption 4d), whether or not its
 * rows were read. Returns the stream while rows are still unread in it, else undefined.
 */
export function copyOutEnded(query: TrackedQuery): Readable | undefined {
  const stream = query.stream
  if (stream === undefined || 'writableEnded' in stream) return undefined
  resumeSocket(stream)
  return stream.readableEnded || stream.destroyed ? undefined : stream
}

/**
 * Whether the query added a named statement to its connection: postgres.js prepared it anew (it
 * was not there) and the server completed its Parse. postgres.js keeps it for the connection's
 * life (one per distinct text; `describe()` and a retried statement add one more each), and the
 * pool counts them (`maxPreparedStatements`). Not one the server refused to parse (nothing kept).
 */
export function preparedAnew(query: TrackedQuery): boolean {
  return query.prepare === true && query.prepared === false && query.parsing === false
}

/**
 * Whether a query that ended with `error` may have left its connection unread for good: a COPY
 * TO STDOUT, whose stream pauses postgres.js's socket when its buffer is full and is the only
 * thing that resumes it, which a failed stream never does.
 */
export function leftSocketPaused(query: TrackedQuery, error: unknown): boolean {
  return error !== undefined && query.stream !== undefined && !('writableEnded' in query.stream)
}

function resolveTracked(this: TrackedQuery, value: unknown): void {
  // COPY hands out its stream first; the query ends with its result. Also when it was not asked
  // for with readable()/writable() (a plain query whose statement is a COPY): the statement runs
  // on until the stream is done with. Every such stream gets an error listener: postgres.js may
  // fail it as it makes it (a COPY cancelled because its request ended: the server sends the
  // CopyOutResponse, then the cancel's error), on the next tick, before the holder's `await`
  // resumes and could listen; no listener would make that an uncaught 'error' event, which ends
  // the process. The holder still sees the error (its own listeners, pipeline(), for await).
  // (A result is an array: the common case is decided by the first test.)
  if (
    !Array.isArray(value) &&
    this.stream === undefined &&
    value !== null &&
    typeof value === 'object' &&
    typeof (value as { pipe?: unknown }).pipe === 'function'
  ) {
    this.streaming = true
    ;(value as Readable | Writable).on('error', ignoreError)
    if (!('writableEnded' in value)) readOnWhenDestroyed(value as Readable)
    surfaceStreamErrors(this, value as Readable | Writable)
    this.stream = value as Readable | Writable
    this.innerResolve(value)
    return
  }
  // A cursor closed early (CLOSE) is resolved twice, at CloseComplete and at ReadyForQuery.
  if (this.redirected || this.ended) return
  if (this.stoppedBy !== undefined) {
    // Closed because it had to stop (a cursor), or answered whole after a row failed (4h): it
    // ends with the reason.
    endRejected(this, this.stoppedBy)
    return
  }
  this.ended = true
  ended(this)
  this.owner.settled(this, value, undefined)
  this.innerResolve(value)
}

/** Its end, to what waited for it (8b): before its owner hears of it, and sends more. */
function ended(query: TrackedQuery): void {
  const onEnd = query.onEnd
  if (onEnd === undefined) return
  query.onEnd = undefined
  onEnd()
}

function rejectTracked(this: TrackedQuery, error: unknown): void {
  if (tookBuildFailure(this, error)) return
  if (this.redirected || this.ended) return
  if (thrownByApp(error) && (this as { active?: unknown }).active === true) {
    if (this.innerCursorFn !== undefined) {
      // postgres.js wrote a Sync of its own for the cursor, and writes another at its end: the
      // connection's answers can no longer be told apart. It fails now, and is retired; what
      // waits behind it is not handed over (createServerClient).
      unreadable.add(this)
      endRejected(this, error)
      return
    }
    // The statement still runs on the server, and the connection is not free until it ended: the
    // query fails with what was thrown then (its ReadyForQuery, its error, or a lost connection).
    this.stoppedBy ??= error
    return
  }
  if (failedItsBind(this, error)) {
    // postgres.js keeps it as its connection's query until the ReadyForQuery of the Sync it wrote,
    // and queues what is handed to it until then: it ends there (resolveTracked), never before,
    // so that nothing is built behind it where its build failure would hit another query (8b).
    this.stoppedBy ??= error
    return
  }
  endRejected(this, error)
}

/**
 * Whether postgres.js rejected `query` because it could not build the Bind of a statement it
 * described first (a serializer that threw, an undefined inside an array), when the server's
 * ParameterDescription came: it wrote a Sync, and settles the query again at its ReadyForQuery.
 * Not the server's error (the query's last answer), nor a lost connection (nothing follows).
 */
function failedItsBind(query: TrackedQuery, error: unknown): boolean {
  const { active, describeFirst } = query as { active?: unknown; describeFirst?: unknown }
  if (active !== true || describeFirst !== true) return false
  if (!(error instanceof Error) || error.name === 'PostgresError') return false
  const { code, syscall } = error as { code?: unknown; syscall?: unknown }
  return syscall === undefined && !(typeof code === 'string' && /^(CONNECT|E[A-Z]+$)/.test(code))
}

/**
 * What a parser or transform of the app's threw (guardAppCode): known by identity, so that no
 * throw can be mistaken for another failure (one of postgres.js's own, a statement's error).
 */
const appThrows = new WeakSet<object>()
/** Queries after whose end their connection's answers can no longer be matched (leftUnreadable). */
const unreadable = new WeakSet<object>()

function thrownByApp(error: unknown): boolean {
  return typeof error === 'object' && error !== null && appThrows.has(error)
}

/** Whether `query` left its connection unreadable: it must be retired, not used again. */
export function leftUnreadable(query: AdapterQuery): boolean {
  return unreadable.has(query)
}

/**
 * A parser or transform of the app's, as postgres.js calls it while it reads an answer: what it
 * throws is marked (appThrows) so that rejectTracked tells it from postgres.js's own failures (a
 * lost connection, whose query must end at once), whatever it throws. Fixed arity: called per
 * value.
 */
function guardAppCode<F extends (first: unknown, second: unknown) => unknown>(fn: F): F {
  // A function, not an arrow: postgres.js calls a parser as `column.parser(x)`, and one of the
  // app's may read `this`.
  const guarded = function (this: unknown, first: unknown, second: unknown) {
    try {
      return fn.call(this, first, second)
    } catch (error) {
      // An object postgres.js can name the query on (it defines properties on it): a primitive or
      // a frozen object goes as an Error of its own, with it as its cause.
      const thrown =
        typeof error === 'object' && error !== null && Object.isExtensible(error)
          ? error
          : Object.assign(new Error(String((error as { message?: unknown } | null)?.message ?? error)), {
              cause: error,
            })
      appThrows.add(thrown)
      throw thrown
    }
  }
  // A parser's `array` flag tells postgres.js to strip the braces: kept.
  if ((fn as { array?: unknown }).array === true) (guarded as { array?: boolean }).array = true
  return guarded as F
}

/**
 * Guards the parsers the app gave (`types`) and every decoding transform of a client
 * (guardAppCode). postgres.js's own parsers read what the server sends and are left as they are:
 * a guard costs a call per value read.
 */
function guardClientCode(options: TypeOptions, appTypes: unknown): void {
  const given = Object.values((appTypes ?? {}) as Record<string, { from?: unknown } | undefined>)
  for (const type of given) {
    for (const oid of Array.isArray(type?.from) ? type.from : []) {
      const parser = options.parsers[Number(oid)]
      if (typeof parser === 'function') options.parsers[Number(oid)] = guardAppCode(parser as never)
    }
  }
  const transform = options.transform as Record<string, { from?: unknown } | undefined>
  for (const kind of ['column', 'value']) {
    const side = transform[kind]
    if (typeof side?.from === 'function') side.from = guardAppCode(side.from as never)
  }
  const row = transform.row
  if (typeof row?.from === 'function') {
    // postgres.js applies a row transform to raw rows too: the pool reads its own statements raw
    // (rawText), and a transform that renames keys or drops nulls must not change them. A raw row
    // (bytes or nulls by position) passes unchanged, the app's own `.raw()` rows included.
    const guarded = guardAppCode(row.from as never) as (this: unknown, value: unknown) => unknown
    row.from = function (this: unknown, value: unknown) {
      return isRawRow(value) ? value : guarded.call(this, value)
    }
  }
}

/**
 * Whether the app's own `types` serialize `oid`: postgres.js installs a type's `serialize` for its
 * `to` and for each oid of its `from` (types.js), and the app's choice stands.
 */
function appSerializes(appTypes: unknown, oid: number): boolean {
  const given = Object.values((appTypes ?? {}) as Record<string, { to?: unknown; from?: unknown } | undefined>)
  return given.some(
    (type) =>
      Number(type?.to) === oid ||
      (type !== undefined && [type.from ?? []].flat().some((from) => Number(from) === oid) && 'serialize' in type),
  )
}

/** PostgreSQL's boolean type. */
const BOOL_OID = 16

/**
 * postgres.js 3.4.9 serializes a boolean parameter as `x === true ? 't' : 'f'`: the text `'true'`
 * of a query string, `1` or `'yes'` is stored as false, silently. As pg does, anything but a
 * boolean goes as its text, which the server reads or refuses (22P02). An app's own boolean type
 * (`types` with `to: 16`) is left as it is.
 */
function sendBooleansAsText(options: TypeOptions, appTypes: unknown): void {
  if (appSerializes(appTypes, BOOL_OID)) return
  options.serializers[BOOL_OID] = (x) => (x === true ? 't' : x === false ? 'f' : `${x}`)
}

/** PostgreSQL's date, timestamp and timestamptz types. */
const DATE_OIDS = [1082, 1114, 1184]

/**
 * postgres.js 3.4.9 serializes a date parameter as `new Date(x).toISOString()`: text from a query
 * string is read by JavaScript's lenient parser ('2024-02-30' is March 1st, '42' is 2042, and
 * 'infinity' throws). As pg does, text goes as it is, which the server reads or refuses (22007,
 * 22008); a Date or a number of milliseconds goes as postgres.js sends it. An app's own type for
 * the oid (`types` with `to`) is left as it is.
 */
function sendDateTextAsText(options: TypeOptions, appTypes: unknown): void {
  for (const oid of DATE_OIDS) {
    const serialize = options.serializers[oid]
    if (serialize === undefined || appSerializes(appTypes, oid)) continue
    options.serializers[oid] = (x) => (typeof x === 'string' ? x : serialize(x))
  }
}

function isRawRow(value: unknown): boolean {
  return Array.isArray(value) && value.every((column) => column === null || column instanceof Uint8Array)
}

function endRejected(query: TrackedQuery, error: unknown): void {
  query.ended = true
  ended(query)
  const out = query.owner.settled(query, undefined, error)
  query.failure = out
  const stream = query.stream
  if (stream !== undefined && 'writableEnded' in stream && !stream.writableFinished && !stream.destroyed) {
    // A COPY FROM STDIN the server failed (a bad row) after its writer had ended it: postgres.js
    // fails the query, but the stream, whose end waits for a CommandComplete that never comes,
    // would wait for good, and a `pipeline()` into it with it (assumption 4g).
    stream.destroy(out as Error)
  }
  query.innerReject(out)
}

type AsyncIterable = { [Symbol.asyncIterator](): { next(): unknown; return(): unknown } }

/**
 * postgres.js's cursor iterator answers `done` after a query that failed between two batches:
 * the loop would end as if every row had been read. This one throws the failure instead.
 */
function cursorTrackedIterator(this: TrackedQuery, ...args: unknown[]): unknown {
  const out = (queryCursor as (...a: unknown[]) => unknown).apply(this, args)
  if (out === this) return out
  const query = this
  const iterable = out as AsyncIterable
  return {
    [Symbol.asyncIterator]() {
      const iterator = iterable[Symbol.asyncIterator]()
      return {
        next: () => (query.failure === undefined ? iterator.next() : Promise.reject(query.failure)),
        return: () => iterator.return(),
      }
    },
  }
}

let queryCursor: unknown
/** postgres.js's `sql.CLOSE`: what a cursor callback returns to end the cursor early. */
let closeCursor: unknown

/**
 * A forEach callback that throws is not called again, and the query fails with what it threw once
 * its statement ended (4h): postgres.js would reject the query at once, with the statement still
 * running, and go on calling the callback for every row left.
 */
function forEachTracked(this: TrackedQuery, row: unknown, result: unknown): void {
  if (this.stoppedBy !== undefined) return
  try {
    ;(this.innerForEachFn as (row: unknown, result: unknown) => void)(row, result)
  } catch (error) {
    this.stoppedBy = error
  }
}

function cursorTracked(this: TrackedQuery, rows: unknown): unknown {
  // Ended by a throw while its batch was read (4h): the callback gets no broken batch, and
  // postgres.js, waiting on this for good, writes nothing more (the connection is retired).
  if (this.ended) return new Promise<never>(() => {})
  let returned: unknown
  try {
    returned = (this.innerCursorFn as (rows: unknown) => unknown)(rows)
  } catch (error) {
    returned = Promise.reject(error)
  }
  const waited = this.owner.cursorBatch(this, returned)
  if (typeof (waited as { then?: unknown } | null)?.then !== 'function') return waited
  // Never a rejection for postgres.js (4b): the portal is closed, the query fails with the reason.
  return (waited as Promise<unknown>).then(
    (value) => value,
    (error: unknown) => {
      this.stoppedBy = error
      return closeCursor
    },
  )
}

/**
 * Subclasses postgres.js's Query so that every way a query ends (result, error, cursor end,
 * cancel) passes through its owner: the lease goes back only when nothing of it runs. Accessors,
 * not a wrapper: postgres.js reassigns resolve/reject (per cursor batch).
 */
export function trackedQueryClass(helpers: PostgresTypes.Sql<{}>): TrackedQueryConstructor {
  const Query = (helpers`select 1` as unknown as AdapterQuery).constructor as new (...args: unknown[]) => object
  queryCursor = (Query.prototype as { cursor: unknown }).cursor
  closeCursor = (helpers as unknown as { CLOSE: unknown }).CLOSE
  // Every field of TrackedQuery but innerResolve/innerReject (set through the accessors below by
  // postgres.js's constructor) is set here, so each query has all of them from the start.
  const Tracked = class extends Query {
    // The parameters of TrackedQueryConstructor, spelled out: a rest parameter would allocate
    // an array for every query.
    constructor(
      strings: readonly string[],
      args: unknown[],
      handler: QueryHandler,
      canceller: (query: AdapterQuery) => unknown,
      options: object | undefined,
      owner: QueryOwner,
      setup: boolean,
    ) {
      super(strings, args, handler, canceller, options)
      const query = this as unknown as TrackedQuery
      query.owner = owner
      query.setup = setup
      query.internal = false
      query.final = false
      query.block = undefined
      query.savepointStep = false
      query.redirected = false
      query.startedAt = 0
      query.innerCursorFn = undefined
      query.innerForEachFn = undefined
      query.failure = undefined
      query.stoppedBy = undefined
      query.ended = false
      query.observed = undefined
      query.stream = undefined
      query.onEnd = undefined
    }
  }
  ;(Tracked.prototype as { cursor: unknown }).cursor = cursorTrackedIterator
  Object.defineProperties(Tracked.prototype, {
    resolve: {
      get: () => resolveTracked,
      set(this: TrackedQuery, fn: (value: unknown) => void) {
        this.innerResolve = fn
      },
    },
    reject: {
      get: () => rejectTracked,
      set(this: TrackedQuery, fn: (error: unknown) => void) {
        this.innerReject = fn
      },
    },
    forEachFn: {
      get(this: TrackedQuery) {
        return this.innerForEachFn === undefined ? undefined : forEachTracked
      },
      set(this: TrackedQuery, fn: ((row: unknown, result: unknown) => void) | undefined) {
        this.innerForEachFn = fn
      },
    },
    cursorFn: {
      get(this: TrackedQuery) {
        return this.innerCursorFn === undefined ? undefined : cursorTracked
      },
      set(this: TrackedQuery, fn: ((rows: unknown) => unknown) | undefined) {
        this.innerCursorFn = fn
      },
    },
  })
  return Tracked as unknown as TrackedQueryConstructor
}

/**
 * Whether a query may hold several statements: a simple-protocol message with a `;` before its
 * end (inside a literal too: the answer errs on the side of several). One statement alone is
 * known by its command tag; of several, postgres.js keeps no tag of those without rows.
 */
export function mayHoldSeveral(query: AdapterQuery): boolean {
  if (query.options.simple !== true) return false
  const text = query.strings.length === 1 ? (query.strings[0] as string) : query.strings.join(' ')
  const at = text.indexOf(';')
  return at !== -1 && /[^\s;]/.test(text.slice(at + 1))
}

/**
 * How many statements a simple-protocol message may hold (its `;`-separated parts that are not
 * blank; a `;` inside a literal or a function's body counts too: never fewer than it holds); 1
 * for any other query.
 */
export function statementsIn(query: AdapterQuery): number {
  if (!mayHoldSeveral(query)) return 1
  const text = query.strings.length === 1 ? (query.strings[0] as string) : query.strings.join(' ')
  let count = 0
  for (const part of text.split(';')) if (/\S/.test(part)) count++
  return Math.max(1, count)
}

/** The statement as sent, `$n` placeholders for values (built by postgres.js when it ran). */
export function queryText(query: AdapterQuery): string {
  const built = (query as { string?: unknown }).string
  if (typeof built === 'string') return built
  let text = query.strings[0] ?? ''
  for (let i = 1; i < query.strings.length; i++) text += `$${i}${query.strings[i]}`
  return text
}

/** Command tag and row count of what a query resolved with (undefined for a stream, say). */
export function resultOf(value: unknown): { command: string | undefined; count: number | undefined } {
  if (value === null || typeof value !== 'object') return { command: undefined, count: undefined }
  const result = value as { command?: unknown; count?: unknown }
  return {
    command: typeof result.command === 'string' ? result.command : undefined,
    count: typeof result.count === 'number' ? result.count : undefined,
  }
}

/** Every command tag of a result (a simple multi-statement query resolves with one per statement). */
export function commandsOf(value: unknown): string[] {
  // One result carries its tag: its rows may be arrays too (values(), raw()), which are no results.
  const { command } = resultOf(value)
  if (command !== undefined) return [command]
  if (Array.isArray(value) && value.length > 0 && Array.isArray(value[0])) {
    return value.map((result) => resultOf(result).command ?? '')
  }
  return []
}

/** The query being handed to postgres.js (assumption 8), and what was rejected meanwhile. */
let building: AdapterQuery | undefined
let buildFailure: { readonly error: unknown; readonly own: boolean } | undefined

/**
 * While a query is handed to postgres.js, a rejection can only be its build failing: kept here
 * and given to the query that failed (`sendBuilt`), whichever query postgres.js rejected.
 */
function tookBuildFailure(query: AdapterQuery, error: unknown): boolean {
  if (building === undefined) return false
  buildFailure ??= { error, own: query === building }
  return true
}

/** Hands `query` to postgres.js; false when its build failed behind another statement (8). */
function sendBuilt(handler: QueryHandler, query: AdapterQuery): boolean {
  building = query
  try {
    handler(query)
  } finally {
    building = undefined
  }
  const failure = buildFailure
  if (failure === undefined) return true
  buildFailure = undefined
  // A microtask later, as any failure: its sender has not finished sending it yet.
  queueMicrotask(() => query.reject(failure.own ? failure.error : freshError(failure.error)))
  return failure.own
}

/**
 * The error postgres.js built for another query, as a new one: it carries that query's text and
 * parameter values (non-enumerable), which are not this query's to show.
 */
function freshError(error: unknown): Error {
  const { message, code } = (error ?? {}) as { message?: unknown; code?: unknown }
  return Object.assign(new Error(typeof message === 'string' ? message : String(error)), { code })
}

/**
 * The build failures a query's own values show (postgres.js's own errors), found before it is
 * handed over: failing it there keeps its connection, where a failure behind another statement
 * retires it (8). Others (nested in helpers, a serializer that throws) are left to `sendBuilt`.
 */
function refusedBeforeBuild(query: AdapterQuery, transform: { undefined?: unknown }): Error | undefined {
  const args = query.args
  if (args.length >= MAX_PARAMETERS) {
    return Object.assign(new Error(`Max number of parameters (${MAX_PARAMETERS}) exceeded`), {
      code: 'MAX_PARAMETERS_EXCEEDED',
    })
  }
  if (transform.undefined === undefined && args.includes(undefined)) {
    return Object.assign(new Error('Undefined values are not allowed'), { code: 'UNDEFINED_VALUE' })
  }
  return undefined
}

/**
 * postgres.js 3.4.9 types a JS array parameter as its first element: an array of booleans, Dates,
 * BigInts or Buffers goes as one boolean (timestamptz, int8, bytea), not as an array, and the
 * server refuses the statement (42804, 42809: `where active = any(${[true, false]})`). As pg does,
 * such an array goes untyped: the server types it where it is used, and postgres.js serializes
 * it as that array type (each element as its own type's). The holder's own array is left as it is.
 */
function untypeArrays(query: AdapterQuery, typed: (value: unknown, type: number) => unknown): void {
  if (!query.args.some(typedByFirstElement)) return
  query.args = query.args.map((arg) => (typedByFirstElement(arg) ? typed(arg, 0) : arg))
}

function typedByFirstElement(value: unknown): boolean {
  if (!Array.isArray(value)) return false
  let first: unknown = value
  while (Array.isArray(first)) first = first[0]
  return typeof first === 'boolean' || typeof first === 'bigint' || first instanceof Date || first instanceof Uint8Array
}

/** What a query the connection never sent fails with once the connection is ending or stuck. */
function destroyed(): Error {
  return Object.assign(new Error('write CONNECTION_DESTROYED'), { code: 'CONNECTION_DESTROYED' })
}

/** The most parameters postgres.js sends in one statement (65534 and more are refused). */
const MAX_PARAMETERS = 65534

/** One server connection's postgres.js client (`max: 1`), and what the pool needs of it. */
export interface ServerClient {
  /** The client itself (for the pool's own statements: reading the budget, the ping). */
  readonly sql: PostgresTypes.Sql<{}>
  /**
   * Sends a tracked query on this client's connection. False when postgres.js could not build it
   * behind another statement (assumption 8): the query fails (a microtask later) with the reason,
   * and nothing more may be sent on this connection (its driver's queue holds a query that will
   * never be answered).
   */
  send(query: AdapterQuery): boolean
  /**
   * Sends a simple-protocol statement of the pool's own at once, in order with what is sent
   * next (a query run by awaiting it would wait a microtask, behind statements sent meanwhile).
   * `onEnd` runs once, synchronously, when its answer is read (with the error if it failed,
   * else undefined): before postgres.js hands out the answers of the statements sent behind it.
   */
  sendNow(text: string, onEnd: (error: unknown) => void): void
  /** Sends a CancelRequest for this connection's backend; resolves once the server took it. */
  cancel(): Promise<void>
  /**
   * Connects and learns the backend; installs the array types (filling `arrayTypes` the first
   * time). Fails (UNREADABLE_SETTINGS) on a session postgres.js would misread values on.
   */
  open(arrayTypes: Record<number, number> | undefined): Promise<void>
  /** Whether the login may run what the reset's check seeds random() with (learnt by open()). */
  readonly seedable: boolean
  /** open()'s check of the session's settings again (after onConnect). */
  checkSettings(): Promise<void>
  readonly pid: number
  /**
   * Ends the client: `graceSeconds: 0` rejects whatever is pending at once and closes the socket
   * the graceful way (postgres.js sends Terminate and ends its side; it never destroys it).
   */
  end(graceSeconds: number): Promise<void>
}

export interface ClientSettings {
  /** A postgres:// URL, if one was given. */
  readonly url: string | undefined
  readonly options: PostgresTypes.Options<{}>
  /** The pool's: true for a notice of its own statements (not passed on to the app's onnotice). */
  readonly onNotice: (notice: PostgresTypes.Notice) => boolean | undefined
  /** postgres.js's onclose: the socket closed. */
  readonly onClose: () => void
  /**
   * The client's own finding that its connection can no longer be used (a statement left its
   * answers unreadable, one could not be built behind another): no close of the other side.
   * Absent: onClose is called for it.
   */
  readonly onUnusable?: (() => void) | undefined
}

/** Runs an app's callback whose failure must not reach postgres.js: a throw, or a promise that rejects. */
function contained(callback: () => unknown): void {
  try {
    const result = callback()
    if (typeof (result as PromiseLike<unknown> | null)?.then === 'function') {
      Promise.resolve(result).catch(() => {})
    }
  } catch {}
}

/**
 * The `onnotice` and `onclose` of a client the pool opens: its own, then the app's when its
 * `connection` options give one (`onnotice: () => {}` to quiet postgres.js is common), without the
 * notices of the pool's own statements (`onNotice` answers true for those). The app's runs inside
 * postgres.js's reading of the connection: a throw there, or a
 * rejection of an async one, is not let through.
 */
export function chainedCallbacks(
  given: PostgresTypes.Options<{}>,
  onNotice: (notice: PostgresTypes.Notice) => boolean | undefined,
  onClose: () => void,
): { onnotice: (notice: PostgresTypes.Notice) => void; onclose: (connectionId: number) => void } {
  const { onnotice: appNotice, onclose: appClose } = given as {
    onnotice?: (notice: PostgresTypes.Notice) => void
    onclose?: (connectionId: number) => void
  }
  return {
    onnotice:
      typeof appNotice === 'function'
        ? (notice) => {
            if (onNotice(notice) === true) return
            contained(() => appNotice(notice))
          }
        : onNotice,
    onclose:
      typeof appClose === 'function'
        ? (connectionId) => {
            onClose()
            contained(() => appClose(connectionId))
          }
        : onClose,
  }
}

export function createServerClient(settings: ClientSettings): ServerClient {
  const options: PostgresTypes.Options<{}> = {
    ...settings.options,
    max: 1,
    // null, not undefined: postgres.js would otherwise retire connections on its own timers.
    idle_timeout: null as unknown as undefined,
    max_lifetime: null,
    // Stated: postgres.js would read PGDEBUG (or a URL's debug=), and a truthy debug makes query
    // parameters enumerable on errors, and so logged.
    debug: false,
    ...chainedCallbacks(settings.options, settings.onNotice, settings.onClose),
  }
  const sql = settings.url === undefined ? postgres(options) : postgres(settings.url, options)
  // postgres.js loads array types on each new connection from a promise nobody handles: a
  // connection lost at that moment ends the process with an unhandled rejection
  // (porsager/postgres#1192, #1205, #1223). open() loads them as an ordinary query instead.
  const fetchTypes = sql.options.fetch_types !== false
  ;(sql.options as { fetch_types: boolean }).fetch_types = false
  const probe = sql`select 1` as unknown as { handler: QueryHandler; canceller: Canceller }
  const handler = probe.handler
  const canceller = probe.canceller
  let backend: BackendKey | undefined
  let pid = 0
  let seedable = false
  const transform = (sql.options as unknown as TypeOptions).transform
  guardClientCode(sql.options as unknown as TypeOptions, (settings.options as { types?: unknown }).types)
  sendBooleansAsText(sql.options as unknown as TypeOptions, (settings.options as { types?: unknown }).types)
  sendDateTextAsText(sql.options as unknown as TypeOptions, (settings.options as { types?: unknown }).types)
  /**
   * A query after which postgres.js queues what is sent (it is described first, or a cursor), while
   * it runs; what is sent meanwhile waits here instead, and is handed over once it ended (8b).
   */
  let blocking: AdapterQuery | undefined
  const waiting: AdapterQuery[] = []
  let stuck = false
  const unusable = settings.onUnusable ?? settings.onClose
  const sendNowOrRefuse = (query: AdapterQuery): boolean => {
    if (stuck) {
      queueMicrotask(() => query.reject(destroyed()))
      return false
    }
    const refused = refusedBeforeBuild(query, transform)
    if (refused !== undefined) {
      query.executed = true
      queueMicrotask(() => query.reject(refused))
      return true
    }
    untypeArrays(query, sql.typed)
    if (!sendBuilt(handler, query)) {
      stuck = true
      return false
    }
    const built = query as AdapterQuery & { describeFirst?: unknown }
    // A COPY (readable(), writable()) too: while its stream is open postgres.js refuses every
    // query (COPY_IN_PROGRESS), a pipelined neighbour's among them; it waits for the COPY's end.
    if (built.describeFirst || built.cursorFn !== undefined || built.streaming === true) {
      blocking = query
      const unblock = () => {
        if (blocking !== query) return
        blocking = undefined
        if (leftUnreadable(query)) {
          // Its answers can no longer be matched (4h): nothing more is sent on this connection.
          stuck = true
          for (const held of waiting.splice(0)) held.reject(destroyed())
          unusable()
          return
        }
        while (blocking === undefined && waiting.length > 0) {
          if (!sendNowOrRefuse(waiting.shift() as AdapterQuery)) unusable()
        }
      }
      // At its end as its owner sees it (a cursor's own promise may never settle: postgres.js hands
      // each batch out through new promises), once postgres.js is done with its answer: until
      // then it would still queue what it is handed (its connection is marked full).
      ;(query as TrackedQuery).onEnd = () => queueMicrotask(unblock)
    }
    return true
  }
  return {
    sql,
    send(query) {
      // postgres.js would queue it and build it later, outside sendBuilt (assumption 8b). Behind
      // a COPY of its own holder it is refused as postgres.js refuses it (COPY_IN_PROGRESS): held,
      // a holder that awaits it before ending its COPY would wait for good.
      if (blocking !== undefined && !(blocking.streaming === true && ownerOf(blocking) === ownerOf(query))) {
        waiting.push(query)
        return true
      }
      return sendNowOrRefuse(query)
    },
    get pid() {
      return pid
    },
    cancel: () => (backend === undefined ? Promise.resolve() : canceller({ state: backend, active: true })),
    sendNow(text, onEnd) {
      const query = sql.unsafe(text) as unknown as AdapterQuery
      const { resolve, reject } = query
      // postgres.js may settle a query more than once: the first answer is the one.
      let ended = false
      query.resolve = (value: unknown) => {
        if (!ended) {
          ended = true
          onEnd(undefined)
        }
        resolve(value)
      }
      query.reject = (error: unknown) => {
        // Another query's build failure, which postgres.js rejects this one with (assumption 8).
        if (tookBuildFailure(query, error)) return
        if (!ended) {
          ended = true
          onEnd(error)
        }
        reject(error)
      }
      query.executed = true
      handler(query)
      Promise.prototype.then.call(query, undefined, () => {})
    },
    async open(arrayTypes) {
      // Raw, by position, here and below: out of reach of the app's parsers and transforms.
      const query = sql.unsafe(OPEN_SQL).raw()
      const [row] = (await query) as unknown as RawRow[]
      pid = Number(rawText(row?.[0])) || 0
      backend = (query as unknown as { state: BackendKey | null }).state ?? undefined
      seedable = rawText(row?.[2]) === 't'
      refuseUnreadable(rawText(row?.[1]), sql.parameters.DateStyle)
      if (arrayTypes === undefined || !fetchTypes) return
      // The oids are the server's: loaded once per pool, installed on every connection.
      if (Object.keys(arrayTypes).length === 0) {
        const rows = (await sql.unsafe(ARRAY_TYPES_SQL).raw()) as unknown as RawRow[]
        for (const [oid, typarray] of rows) {
          const key = Number(rawText(oid))
          const value = Number(rawText(typarray))
          if (key && value) arrayTypes[key] = value
        }
      }
      installArrayTypes(sql.options as unknown as TypeOptions, arrayTypes)
    },
    get seedable() {
      return seedable
    },
    async checkSettings() {
      const [row] = (await sql.unsafe(READABLE_SQL).raw()) as unknown as RawRow[]
      refuseUnreadable(rawText(row?.[0]), sql.parameters.DateStyle)
    },
    end: (graceSeconds) => {
      // Never handed to postgres.js: they fail as its own pending queries do.
      stuck = true
      blocking = undefined
      for (const query of waiting.splice(0)) query.reject(destroyed())
      return sql.end({ timeout: graceSeconds }).catch(() => {})
    },
  }
}

/**
 * The code of an opening refused because the server's settings would make postgres.js misread
 * values (open()): a DateStyle that is not ISO, client_encoding other than UTF8, bytea_output other
 * than hex, extra_float_digits below 1.
 */
export const UNREADABLE_SETTINGS = 'UNREADABLE_SETTINGS'

function unreadableSettings(message: string): Error {
  return Object.assign(new Error(message), { code: UNREADABLE_SETTINGS })
}

/** Whether client_encoding, bytea_output and extra_float_digits are what postgres.js reads values with. */
const READABLE =
  "pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8' AND " +
  "pg_catalog.current_setting('bytea_output') OPERATOR(pg_catalog.=) 'hex' AND " +
  "pg_catalog.current_setting('extra_float_digits')::pg_catalog.int4 OPERATOR(pg_catalog.>=) 1"

/**
 * The first statement on every connection: its backend's pid, whether its settings are READABLE,
 * and whether the login may run what the reset's check seeds random() with (RESET_CHECK: a
 * database that revoked EXECUTE on them would fail every reset).
 */
export const OPEN_SQL =
  `select pg_catalog.pg_backend_pid() as pid, ${READABLE} as readable, ` +
  `${SEED_FUNCTIONS.map((fn) => `pg_catalog.has_function_privilege('${fn}', 'EXECUTE')`).join(' AND ')} as seedable`

/** READABLE again, once onConnect ran (what it set is every reset's baseline). */
const READABLE_SQL = `select ${READABLE} as readable`

/** A row of a query read with `.raw()`: each column's bytes by position (null for SQL null). */
export type RawRow = readonly (Uint8Array | null)[]

/**
 * The text of a raw column (`'t'`/`'f'` for a bool): what the pool reads its own statements by,
 * out of reach of the app's parsers and column transforms.
 */
export function rawText(value: unknown): string | undefined {
  return value instanceof Uint8Array
    ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8')
    : undefined
}

/**
 * Refuses a session postgres.js would misread values on: `readable` false (OPEN_SQL) or a
 * DateStyle that is not ISO. The pool sends bytea_output and extra_float_digits as startup
 * parameters, but a proxy (PgBouncer, which refuses them, or one that drops them) or onConnect
 * leaves others; DateStyle it does not set (a startup parameter would replace the input order,
 * DMY or MDY, the database chose too): refused, as PgJDBC does.
 */
function refuseUnreadable(readable: string | undefined, dateStyle: string | undefined): void {
  if (readable === 'f') {
    throw unreadableSettings(
      "the session's client_encoding is not UTF8, its bytea_output not 'hex' or its extra_float_digits below 1: " +
        'postgres.js reads text as UTF-8, bytea in hex and floats at full precision only (leave client_encoding, ' +
        "set bytea_output = 'hex' and extra_float_digits = 1 on the database or role, and leave them in onConnect)",
    )
  }
  if (dateStyle !== undefined && !/^\s*ISO\b/i.test(dateStyle)) {
    throw unreadableSettings(
      `the session's DateStyle is ${JSON.stringify(dateStyle)}: postgres.js reads dates in the ISO format only ` +
        "(set DateStyle = 'ISO, DMY' or 'ISO, MDY' on the database or role, or give it in connection.connection)",
    )
  }
}

/** The lease that built a query (undefined for one the adapter did not build). */
function ownerOf(query: AdapterQuery): QueryOwner | undefined {
  return (query as Partial<TrackedQuery>).owner
}

/** Ends the connections `sql` holds now (assumption 7), also those opened after its end(). */
export function closeConnections(sql: PostgresTypes.Sql<{}>): Promise<void> {
  return (sql as unknown as { close: () => Promise<void> }).close().catch(() => {})
}

/** A client that never connects: helpers (identifiers, json, arrays) and the Query class. */
export function createHelpers(url: string | undefined, options: PostgresTypes.Options<{}>): PostgresTypes.Sql<{}> {
  return url === undefined ? postgres({ ...options, max: 1 }) : postgres(url, { ...options, max: 1 })
}

/** postgres.js keeps per-client type state in `options.shared` (not in its typings). */
export function typeArrayMapOf(sql: PostgresTypes.Sql<{}>): Record<number, number> {
  return (sql.options as unknown as TypeOptions).shared.typeArrayMap
}

/**
 * The query postgres.js's own fetchArrayTypes runs, its operators qualified: like every statement
 * of the suite's own, it must not resolve anything through a search_path that may put a schema the
 * app can write before pg_catalog (ALTER DATABASE ... SET search_path).
 */
const ARRAY_TYPES_SQL = `select b.oid, b.typarray from pg_catalog.pg_type a
  left join pg_catalog.pg_type b on b.oid OPERATOR(pg_catalog.=) a.typelem
  where a.typcategory OPERATOR(pg_catalog.=) 'A' group by b.oid, b.typarray order by b.oid`

type Parser = ((x: string) => unknown) & { array?: boolean }
type Serializer = (x: unknown) => unknown
interface TypeOptions {
  parsers: Record<number, Parser>
  serializers: Record<number, Serializer>
  shared: { typeArrayMap: Record<number, number> }
  transform: { undefined?: unknown }
}

/** What postgres.js's addArrayType does for each row of its array types query. */
function installArrayTypes(options: TypeOptions, arrayTypes: Record<number, number>): void {
  for (const [key, typarray] of Object.entries(arrayTypes)) {
    const oid = Number(key)
    if (options.parsers[typarray] && options.serializers[typarray]) continue
    const parser = options.parsers[oid]
    options.shared.typeArrayMap[oid] = typarray
    const parse: Parser = (xs) => arrayParser(xs, parser, typarray)
    parse.array = true
    options.parsers[typarray] = parse
    options.serializers[typarray] = (xs) => arraySerializer(xs, options.serializers[oid], options, typarray)
  }
}

// postgres.js's array codecs (src/types.js, MIT, © Rasmus Porsager), which it does not export:
// requiring its file at run time pinned the version and broke bundlers.

function arrayEscape(x: string): string {
  return x.replace(/\\/g, '\\\\').replace(/"/g, '\\"')
}

function arraySerializer(
  xs: unknown,
  serializer: Serializer | undefined,
  options: TypeOptions,
  typarray: number,
): unknown {
  if (!Array.isArray(xs)) return xs
  if (xs.length === 0) return '{}'
  const first = xs[0]
  // Only _box (1020) has the ';' delimiter for arrays, all other types use ','.
  const delimiter = typarray === 1020 ? ';' : ','
  if (Array.isArray(first) && !(first as { type?: unknown }).type) {
    return `{${xs.map((x) => arraySerializer(x, serializer, options, typarray)).join(delimiter)}}`
  }
  return `{${xs
    .map((item) => {
      let x = item as { type?: unknown; value?: unknown } | null | undefined
      if (x === undefined) {
        x = options.transform.undefined as typeof x
        if (x === undefined) {
          throw Object.assign(new Error('Undefined values are not allowed'), { code: 'UNDEFINED_VALUE' })
        }
      }
      if (x === null) return 'null'
      const value = x.type ? x.value : x
      return `"${arrayEscape(serializer ? String(serializer(value)) : `${value}`)}"`
    })
    .join(delimiter)}}`
}

interface ArrayParserState {
  i: number
  char: string | undefined
  str: string
  quoted: boolean
  last: number
  p: string | undefined
}

/**
 * An unquoted element as its value: the server writes a NULL element as unquoted `NULL` (a text
 * that reads NULL is quoted). postgres.js 3.4.9 gives it to the element's parser ('NULL', NaN,
 * false, an Invalid Date, a JSON error), where pg reads null.
 */
function arrayElement(text: string, parser: Parser | undefined): unknown {
  if (text === 'NULL') return null
  return parser ? parser(text) : text
}

/**
 * The bounds the server writes first for an array whose lower bound is not 1 (`[0:2]={a,b,c}`, what
 * `set tags[0] = ...` makes), less the `[` postgres.js strips as the array's first character.
 */
const BOUNDS = /^-?\d+:-?\d+\](?:\[-?\d+:-?\d+\])*=\{/

function arrayParser(x: string, parser: Parser | undefined, typarray: number): unknown[] {
  // Its elements, as pg reads it: postgres.js 3.4.9 read the bounds as text before a nested array.
  const bounds = BOUNDS.exec(x)
  const text = bounds === null ? x : x.slice(bounds[0].length)
  const state: ArrayParserState = { i: 0, char: undefined, str: '', quoted: false, last: 0, p: undefined }
  return arrayParserLoop(state, text, parser, typarray)
}

function arrayParserLoop(s: ArrayParserState, x: string, parser: Parser | undefined, typarray: number): unknown[] {
  const xs: unknown[] = []
  const delimiter = typarray === 1020 ? ';' : ','
  for (; s.i < x.length; s.i++) {
    s.char = x[s.i]
    if (s.quoted) {
      if (s.char === '\\') {
        s.str += x[++s.i]
      } else if (s.char === '"') {
        xs.push(parser ? parser(s.str) : s.str)
        s.str = ''
        s.quoted = x[s.i + 1] === '"'
        s.last = s.i + 2
      } else {
        s.str += s.char
      }
    } else if (s.char === '"') {
      s.quoted = true
    } else if (s.char === '{') {
      s.last = ++s.i
      xs.push(arrayParserLoop(s, x, parser, typarray))
    } else if (s.char === '}') {
      s.quoted = false
      if (s.last < s.i) xs.push(arrayElement(x.slice(s.last, s.i), parser))
      s.last = s.i + 1
      break
    } else if (s.char === delimiter && s.p !== '}' && s.p !== '"') {
      xs.push(arrayElement(x.slice(s.last, s.i), parser))
      s.last = s.i + 1
    }
    s.p = s.char
  }
  if (s.last < s.i) xs.push(arrayElement(x.slice(s.last, s.i + 1), parser))
  return xs
}
