import type { ServerResponse } from 'node:http'

type Gated = 'writeHead' | 'write' | 'end' | 'flushHeaders'
type Method = (...args: unknown[]) => unknown
type Originals = Readonly<Record<Gated, Method>>

/** What the gate writes instead of held writes whose COMMIT failed. */
export interface RawFailure {
  readonly statusCode: number
  readonly body: string
  /** The error's own headers (Retry-After on a 503). */
  readonly headers: Readonly<Record<string, string>>
}

/** What onSend needs to know of a gated response. */
export interface RawGate {
  /** A write reached the raw response past onSend (a hijacked reply, or `reply.raw` written directly). */
  readonly written: boolean
  /** Fastify's own write follows (onSend decided the reply): writes go straight through from now on. */
  release(): void
  /**
   * Calls `fn` once what the gate holds is written (after the COMMIT), or its failure reply is:
   * at once when it holds nothing.
   */
  whenWritten(fn: () => void): void
}

const kGate = Symbol('fastify-pg-pool.raw-gate')
const describesBody = new Set(['transfer-encoding', 'etag', 'last-modified', 'trailer'])
type GatedResponse = ServerResponse & { [kGate]: Gate }

class Gate implements RawGate {
  /** 'dropped': a second reply's writes, after onSend decided the first (which release() lets through). */
  #state: 'open' | 'committing' | 'passed' | 'failed' | 'dropped' = 'open'
  #intercepted = false
  /** The gate writes its failure reply: its own writes go through (HTTP/2's end() calls write()). */
  #failing = false
  #held: [Gated, unknown[]][] | undefined
  /** What the COMMIT failed with ('failed'): the callbacks of the writes dropped get it. */
  #error: Error | undefined
  /** A held write returned false: 'drain' is owed once the held writes went (or were dropped). */
  #awaitsDrain = false
  #afterWrites: (() => void)[] | undefined
  readonly #res: ServerResponse
  readonly #originals: Originals
  readonly #commit: (statusCode: number) => Promise<void>
  readonly #failure: (error: unknown) => RawFailure
  readonly #decided: () => boolean

  constructor(
    res: ServerResponse,
    originals: Originals,
    commit: (statusCode: number) => Promise<void>,
    failure: (error: unknown) => RawFailure,
    decided: () => boolean,
  ) {
    this.#res = res
    this.#originals = originals
    this.#commit = commit
    this.#failure = failure
    this.#decided = decided
  }

  get written(): boolean {
    return this.#intercepted
  }

  release(): void {
    if (this.#state === 'open' || this.#state === 'dropped') this.#state = 'passed'
  }

  whenWritten(fn: () => void): void {
    if (this.#state === 'committing') {
      this.#afterWrites ??= []
      this.#afterWrites.push(fn)
    } else fn()
  }

  write(name: Gated, args: unknown[]): unknown {
    if (this.#state === 'passed' || this.#failing) return this.#originals[name].apply(this.#res, args)
    if (this.#state === 'open' && this.#decided()) {
      // The reply was decided first (onSend holds its payload for the database): a reply written
      // on reply.raw after it (Fastify's own handler-timeout answer, past an error handler that
      // ran already) is a second one, dropped as Fastify drops a second send.
      this.#state = 'dropped'
    }
    if (this.#state === 'failed' || this.#state === 'dropped') {
      // Dropped: its callback still hears of it, as Node calls back a write that cannot go out
      // (a handler awaiting it would wait forever).
      callBack(name, args, this.#error ?? afterEnd())
      return name === 'write' ? true : this.#res
    }
    this.#intercepted = true
    this.#held ??= []
    this.#held.push([name, args])
    if (this.#state === 'open') {
      this.#state = 'committing'
      const statusCode = name === 'writeHead' && typeof args[0] === 'number' ? args[0] : this.#res.statusCode
      this.#commit(statusCode).then(
        () => this.#passThrough(),
        (error: unknown) => this.#fail(error),
      )
    }
    if (name !== 'write') return this.#res
    // Held in memory until the COMMIT answers: a writer that heeds backpressure (a pipe) waits
    // for 'drain' instead of reading its whole source into the held writes.
    this.#awaitsDrain = true
    return false
  }

  #passThrough(): void {
    this.#state = 'passed'
    let drained = true
    for (const [name, args] of this.#held ?? []) {
      try {
        const result = this.#originals[name].apply(this.#res, args)
        if (name === 'write') drained = result !== false
      } catch {
        // A write the response no longer takes (a second writeHead): nothing of it can reach the
        // client now, and it must not become an unhandled rejection.
      }
    }
    this.#held = undefined
    // The response's own buffer took them: writing may go on (else Node emits 'drain' itself).
    if (this.#awaitsDrain && drained) this.#drain()
    this.#written()
  }

  #drain(): void {
    this.#awaitsDrain = false
    this.#res.emit('drain')
  }

  #written(): void {
    for (const fn of this.#afterWrites?.splice(0) ?? []) fn()
  }

  #fail(error: unknown): void {
    this.#state = 'failed'
    this.#error = error instanceof Error ? error : new Error(String(error))
    const held = this.#held ?? []
    this.#held = undefined
    try {
      this.#writeFailure(error)
    } finally {
      // The held writes never go out: their callbacks get the error the COMMIT failed with.
      for (const [name, args] of held) callBack(name, args, this.#error)
      // A writer waiting to go on learns of the end (its next writes are dropped).
      if (this.#awaitsDrain) this.#drain()
      this.#written()
    }
  }

  #writeFailure(error: unknown): void {
    const res = this.#res
    if (res.headersSent) {
      res.destroy()
      return
    }
    const { statusCode, body, headers } = this.#failure(error)
    // What the handler set to describe its own body (res.setHeader) does not describe this one;
    // its other headers stay, as Fastify keeps them on an error reply.
    for (const name of res.getHeaderNames()) {
      if (name.startsWith('content-') || describesBody.has(name)) res.removeHeader(name)
    }
    this.#failing = true
    try {
      this.#originals.writeHead.call(res, statusCode, {
        ...headers,
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(body),
      })
      this.#originals.end.call(res, body)
    } finally {
      this.#failing = false
    }
  }
}

/** Calls back a write or end that never goes out (`write(chunk, encoding?, cb?)`, `end(chunk?, encoding?, cb?)`). */
function callBack(name: Gated, args: unknown[], error: Error): void {
  const callback = args[args.length - 1]
  if ((name === 'write' || name === 'end') && typeof callback === 'function') process.nextTick(callback, error)
}

/** Node's answer to a write after the response's end: a second reply's writes get it. */
function afterEnd(): Error {
  return Object.assign(new Error('write after end: the reply was already sent'), { code: 'ERR_STREAM_WRITE_AFTER_END' })
}

// One function per method for every gated response (it finds its gate on the response): a
// response gated per request costs one object and five property writes, no closures, and no
// deletes afterwards (a released gate passes writes straight on), which would turn Node's
// response object into a slow dictionary-mode one.
const through = (name: Gated): Method =>
  function (this: GatedResponse, ...args: unknown[]) {
    return this[kGate].write(name, args)
  }
const wrappers: Originals = {
  writeHead: through('writeHead'),
  write: through('write'),
  end: through('end'),
  flushHeaders: through('flushHeaders'),
}

/**
 * The raw response of a transaction route, gated from the request's start: a write that reaches
 * it past `onSend` (a reply hijacked in any hook or the handler, or `reply.raw` written without
 * hijacking) waits for the COMMIT: `commit(statusCode)` runs, the held writes follow in order once
 * it resolves; when it rejects, the client gets `failure(error)` (a 500) instead, and later writes
 * are dropped. A client never sees a 2xx for work that was not committed. onSend releases the gate
 * before Fastify writes the reply it decided (its COMMIT already ran); `decided()`: onSend holds a
 * reply for its COMMIT, and a raw write coming now is a second reply, dropped.
 */
export function gateRawResponse(
  res: ServerResponse,
  commit: (statusCode: number) => Promise<void>,
  failure: (error: unknown) => RawFailure,
  decided: () => boolean,
): RawGate {
  const own = res as unknown as Record<Gated, Method> & { [kGate]: Gate }
  const gate = new Gate(
    res,
    { writeHead: own.writeHead, write: own.write, end: own.end, flushHeaders: own.flushHeaders },
    commit,
    failure,
    decided,
  )
  own[kGate] = gate
  own.writeHead = wrappers.writeHead
  own.write = wrappers.write
  own.end = wrappers.end
  own.flushHeaders = wrappers.flushHeaders
  return gate
}
