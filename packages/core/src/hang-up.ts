import type { ServerResponse } from 'node:http'

/** Set on a response queued behind an earlier one whose socket closed before it went out. */
const kSocketGone = Symbol('fastify-pg-pool.socketGone')

/** What a hang-up is read from: Node's response, or HTTP/2's compatibility response. */
export interface WatchedResponse {
  readonly writableEnded: boolean
  readonly writableFinished: boolean
  /** HTTP/2's response: its stream. */
  readonly stream?: { readonly aborted?: boolean }
}

/**
 * Whether a response that closed, or that Fastify's onResponse saw, was cut: the client hung up,
 * or something destroyed it.
 * - Node's HTTP/2 layer emits 'finish' (so Fastify runs onResponse) for a stream the client reset,
 *   which then reads as finished: the stream says it was aborted.
 * - A response queued behind an earlier one on a keep-alive socket (HTTP/1.1 pipelining) whose
 *   socket closed never went out, even if it was ended (watchClose marks it).
 * Not cut: an ended or finished response. An HTTP/2 stream answered on the stream itself
 * (`respondWithFile`) finishes without the response's `end()`. A hijacked reply answered on
 * `reply.raw.socket` itself never ends its response: it reads as cut (the server's end of the
 * socket cannot be told from a client's hang-up, which ends the socket too).
 */
export function hungUp(response: WatchedResponse): boolean {
  if (response.stream?.aborted === true) return true
  if (response.writableFinished) return false
  return !response.writableEnded || (response as { [kSocketGone]?: boolean })[kSocketGone] === true
}

/** The socket event watchClose needs. */
interface ClosingSocket {
  once(event: 'close', listener: () => void): unknown
}

/** Per socket: what to call for each response queued on it when it closes (one listener a socket). */
const queuedOn = new WeakMap<ClosingSocket, Set<() => void>>()

/**
 * Calls `onClose` (with the response as `this`) when `response` closes; the caller asks hungUp().
 * Watched on every request: Fastify's onRequestAbort does not run once the request's body was read
 * to its end (Node marks a request aborted only while its body is unread: a POST with a body, one
 * with a content-type and an empty body). A response queued behind an earlier one (HTTP/1.1
 * pipelining) has no socket yet and never closes if the socket closes first: the socket's close
 * is watched for it meanwhile, by one listener per socket however many responses queue on it.
 */
export function watchClose(
  response: ServerResponse,
  socket: ClosingSocket | null,
  onClose: (this: ServerResponse) => void,
): void {
  // `on`, not `once`: once wraps the listener in a closure per request; a response closes once.
  response.on('close', onClose)
  if (response.socket !== null || socket === null) return
  let queued = queuedOn.get(socket)
  if (queued === undefined) {
    const entries = new Set<() => void>()
    queued = entries
    queuedOn.set(socket, entries)
    socket.once('close', () => {
      queuedOn.delete(socket)
      for (const socketClosed of [...entries]) socketClosed()
    })
  }
  const entries = queued
  const socketClosed = () => {
    entries.delete(socketClosed)
    response.removeListener('close', onClose)
    ;(response as { [kSocketGone]?: boolean })[kSocketGone] = true
    onClose.call(response)
  }
  entries.add(socketClosed)
  response.once('close', () => entries.delete(socketClosed))
}
