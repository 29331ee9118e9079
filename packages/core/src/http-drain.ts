import type { Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'

/** While the app closes, how often the HTTP/1.1 connections that turned idle are closed. */
const IDLE_CLOSE_EVERY_MS = 50
/** Responses tracked before the first sweep of those already sent. */
const SWEEP_FROM = 64

/**
 * Closes the app's HTTP/1.1 connections as they turn idle once the server stopped listening.
 * Node's server.close() closes only those idle at that moment, and a keep-alive one whose request
 * ends later would hold the server open until keepAliveTimeout (72 s in Fastify);
 * closeIdleConnections() skips a connection that has not carried a request yet (a browser's
 * preconnect, a load balancer's warm connection), which the client may hold open for good: those
 * are tracked here, from their opening to their first request, and closed too while no byte of a
 * request has come. One per server, whichever instances of the core register on it (drainOf).
 * From preClose on, the last response of each connection says `Connection: close` (one in
 * flight included, unless its head went out): the connection is closed right after it, and a
 * client (a load balancer's kept-alive pool) told `keep-alive` would send its next request into a
 * socket being closed.
 */
class HttpDrain {
  readonly #server: Server & { closeIdleConnections?: () => void }
  /** Connections that have not carried a request yet. */
  readonly #unused = new Set<Socket>()
  /** Responses not finished when last swept, in the order their requests came. */
  readonly #pending = new Set<ServerResponse>()
  #sweepAt = SWEEP_FROM
  #draining = false
  #timer: NodeJS.Timeout | undefined

  constructor(server: Server) {
    this.#server = server
    if (typeof this.#server.closeIdleConnections !== 'function') return
    // Over TLS a request's socket is the TLS one: tracked from the handshake.
    const event = server instanceof TlsServer ? 'secureConnection' : 'connection'
    server.on(event, (socket: Socket) => {
      this.#unused.add(socket)
      socket.once('close', () => this.#unused.delete(socket))
    })
    // A request, an upgrade (a WebSocket) or a CONNECT: the connection carries something.
    const used = (request: { socket: Socket }) => {
      this.#unused.delete(request.socket)
    }
    server.on('request', (request: { socket: Socket }, response: ServerResponse) => {
      used(request)
      if (this.#draining) return closeAfter(response)
      // No listener per response: those done are swept from time to time.
      // A response queued behind another (pipelined) on a connection gone is neither finished nor
      // destroyed: its connection's end is its own.
      if (this.#pending.size >= this.#sweepAt) {
        for (const done of this.#pending) {
          if (done.writableFinished || done.destroyed || done.req.socket?.destroyed !== false)
            this.#pending.delete(done)
        }
        this.#sweepAt = Math.max(SWEEP_FROM, this.#pending.size * 2)
      }
      this.#pending.add(response)
    })
    server.on('upgrade', used)
    server.on('connect', used)
  }

  /** From preClose on: each connection closes once it is idle and the server stopped listening. */
  start(): void {
    if (typeof this.#server.closeIdleConnections !== 'function' || this.#timer !== undefined) return
    this.#draining = true
    // Only the last response of each connection: one before it (pipelined requests) saying close
    // would end the connection before the later ones, whose handlers run all the same, are sent.
    const last = new Map<Socket, ServerResponse>()
    for (const response of this.#pending) last.set(response.req.socket, response)
    for (const response of last.values()) closeAfter(response)
    this.#pending.clear()
    this.#timer = setInterval(() => {
      if (this.#server.listening) return
      this.#server.closeIdleConnections?.()
      // Not one whose first request is on its way (bytes read, no request yet): Node answers it.
      for (const socket of this.#unused) if (socket.bytesRead === 0) socket.destroy()
    }, IDLE_CLOSE_EVERY_MS).unref()
  }

  /**
   * At onClose: the drain ends with the app. A server that goes on serving (the app's own, given
   * by serverFactory, which a new instance is built on) says close again only from the next preClose.
   */
  stop(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#draining = false
  }
}

/** Asks Node to close the connection after this response, saying so in its head (`Connection: close`). */
function closeAfter(response: ServerResponse): void {
  if (!response.headersSent) response.setHeader('connection', 'close')
}

const drains = new WeakMap<Server, HttpDrain>()

/** The server's drain: one per server, shared by the instances of the core registered on it. */
export function drainOf(server: Server): HttpDrain {
  let drain = drains.get(server)
  if (drain === undefined) {
    drain = new HttpDrain(server)
    drains.set(server, drain)
  }
  return drain
}
