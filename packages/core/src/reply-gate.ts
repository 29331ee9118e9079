import type { ServerResponse } from 'node:http'

const gated = ['writeHead', 'write', 'end', 'flushHeaders'] as const
type Gated = (typeof gated)[number]
type Method = (...args: unknown[]) => unknown

/**
 * A hijacked reply of a transaction route writes to the raw response itself, past `onSend`.
 * Its first write (status line, headers or body) waits for the COMMIT: `commit(statusCode)`
 * runs, the held writes follow in order once it resolves; when it rejects, the client gets
 * `failure(error)` (a 500) instead, and later writes are dropped. A client never sees a 2xx
 * for work that was not committed.
 */
export function gateRawResponse(
  res: ServerResponse,
  commit: (statusCode: number) => Promise<void>,
  failure: (error: unknown) => { statusCode: number; body: string },
): void {
  const own = res as unknown as Record<Gated, Method>
  const originals = Object.fromEntries(gated.map((name) => [name, own[name]])) as Record<Gated, Method>
  const held: [Gated, unknown[]][] = []
  let state: 'open' | 'committing' | 'passed' | 'failed' = 'open'

  const restore = () => {
    for (const name of gated) delete own[name]
  }
  const passThrough = () => {
    state = 'passed'
    restore()
    for (const [name, args] of held) originals[name].apply(res, args)
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
      held.push([name, args])
      if (state === 'open') {
        state = 'committing'
        const statusCode = name === 'writeHead' && typeof args[0] === 'number' ? args[0] : res.statusCode
        commit(statusCode).then(passThrough, fail)
      }
      return name === 'write' ? true : res
    }
  }
}
