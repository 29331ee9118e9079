import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import { Server as TlsServer } from 'node:tls'

/** While the app closes, how often the HTTP/1.1 connections that turned idle are closed. */
const IDLE_CLOSE_EVERY_MS = 50

/**
 * Closes the app's HTTP/1.1 connections as they turn idle once the server stopped listening.
 * Node's server.close() closes only those idle at that moment, and a keep-alive one whose request
 * ends later would hold the server open until keepAliveTimeout (72 s in Fastify);
 * closeIdleConnections() skips a connection that has not carried a request yet (a browser's
 * preconnect, a load balancer's warm connection), which the client may hold open for good: those
 * are tracked here, from their opening to their first request, and closed too while no byte of a
 * request has come. One per server, whichever instances of the core register on it (drainOf).
 */
class HttpDrain {
  readonly #server: Server & { closeIdleConnections?: () => void }
  /** Connections that have not carried a request yet. */
  readonly #unused = new Set<Socket>()
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
    server.on('request', used)
    server.on('upgrade', used)
    server.on('connect', used)
  }

  /** From preClose on: each connection closes once it is idle and the server stopped listening. */
  start(): void {
    if (typeof this.#server.closeIdleConnections !== 'function' || this.#timer !== undefined) return
    this.#timer = setInterval(() => {
      if (this.#server.listening) return
      this.#server.closeIdleConnections?.()
      // Not one whose first request is on its way (bytes read, no request yet): Node answers it.
      for (const socket of this.#unused) if (socket.bytesRead === 0) socket.destroy()
    }, IDLE_CLOSE_EVERY_MS).unref()
  }

  stop(): void {
    clearInterval(this.#timer)
  }
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
