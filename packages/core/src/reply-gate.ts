import type { ServerResponse } from 'node:http'

const gated = ['writeHead', 'write', 'end', 'flushHeaders'] as const
type Gated = (typeof gated)[number]
type Method = (...args: unknown[]) => unknown

/** What onSend needs to know of a gated response. */
export interface RawGate {
  /** A write reached the raw response past onSend (a hijacked reply, or `reply.raw` written directly). */
  readonly written: boolean
  /** Fastify's own write follows (onSend decided the reply): the raw response is left as it was. */
  release(): void
}

/**
 * The raw response of a transaction route, gated from the request's start: a write that reaches
 * it past `onSend` (a reply hijacked in any hook or the handler, or `reply.raw` written without
 * hijacking) waits for the COMMIT: `commit(statusCode)` runs, the held writes follow in order once
 * it resolves; when it rejects, the client gets `failure(error)` (a 500) instead, and later writes
 * are dropped. A client never sees a 2xx for work that was not committed. onSend releases the gate
 * before Fastify writes the reply it decided (its COMMIT already ran).
 */
export function gateRawResponse(
  res: ServerResponse,
  commit: (statusCode: number) => Promise<void>,
  failure: (error: unknown) => { statusCode: number; body: string },
): RawGate {
  const own = res as unknown as Record<Gated, Method>
  const originals = Object.fromEntries(gated.map((name) => [name, own[name]])) as Record<Gated, Method>
  const held: [Gated, unknown[]][] = []
  let state: 'open' | 'committing' | 'passed' | 'failed' = 'open'
  let intercepted = false

  const restore = () => {
    for (const name of gated) delete own[name]
  }
  const passThrough = () => {
    state = 'passed'
    restore()
    for (const [name, args] of held) {
      try {
        originals[name].apply(res, args)
      } catch {
        // A write the response no longer takes (a second writeHead): nothing of it can reach the
        // client now, and it must not become an unhandled rejection.
      }
    }
    held.length = 0
  }
  const fail = (error: unknown) => {
    state = 'failed'
    held.length = 0
    if (res.headersSent) {
      res.destroy()
      return
    }
    const { statusCode, body } = failure(error)
    originals.writeHead.call(res, statusCode, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    originals.end.call(res, body)
  }

  for (const name of gated) {
    own[name] = (...args: unknown[]) => {
      if (state === 'passed') return originals[name].apply(res, args)
      if (state === 'failed') return name === 'write' ? true : res
      intercepted = true
      held.push([name, args])
      if (state === 'open') {
        state = 'committing'
        const statusCode = name === 'writeHead' && typeof args[0] === 'number' ? args[0] : res.statusCode
        commit(statusCode).then(passThrough, fail)
      }
      return name === 'write' ? true : res
    }
  }
  return {
    get written() {
      return intercepted
    },
    release() {
      if (state !== 'open') return
      state = 'passed'
      restore()
    },
  }
}
