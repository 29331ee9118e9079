import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'

/**
 * A TCP proxy in front of PostgreSQL where a CancelRequest is slow to be processed: its bytes
 * reach the server's host at once, but the server takes `cancelDelayMs` to read them (an
 * overloaded postmaster forking the process that reads the request). A client that gives up on
 * its cancel connection meanwhile (closes it) does not take the bytes back: they are still read,
 * and the cancel still lands, when the server gets to them.
 */
export interface SlowCancelProxy {
  readonly port: number
  /** How long the server takes to read a CancelRequest (0: at once). */
  cancelDelayMs: number
  /** CancelRequests seen (each the first chunk of a connection of its own). */
  readonly cancels: number
  /** CancelRequests written to the server. */
  readonly delivered: number
  /** Called when a CancelRequest arrives (before it is held). */
  onCancel: (() => void) | undefined
  urlFor(url: string): string
  close(): Promise<void>
}

function isCancelRequest(chunk: Buffer): boolean {
  return chunk.length >= 8 && chunk.readInt32BE(0) === 16 && chunk.readInt32BE(4) === 80877102
}

export async function startSlowCancelProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<SlowCancelProxy> {
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()
  let cancels = 0
  let delivered = 0
  const server: Server = createServer((client) => {
    sockets.add(client)
    client.on('error', () => {})
    const upstream = tcpConnect(targetPort, targetHost)
    sockets.add(upstream)
    upstream.on('error', () => {})
    let cancelHeld = false
    let first = true
    client.on('data', (chunk: Buffer) => {
      if (first && isCancelRequest(chunk)) {
        first = false
        cancels++
        cancelHeld = true
        proxy.onCancel?.()
        const timer = setTimeout(() => {
          timers.delete(timer)
          cancelHeld = false
          if (upstream.destroyed) return
          delivered++
          upstream.write(chunk)
          // The server reads the request, then closes (it answers nothing to a CancelRequest).
          upstream.end()
        }, proxy.cancelDelayMs)
        timers.add(timer)
        return
      }
      first = false
      if (!upstream.destroyed) upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!client.destroyed) client.write(chunk)
    })
    client.on('close', () => {
      // The bytes of a held CancelRequest already left the client: they still reach the server.
      if (!cancelHeld) upstream.destroy()
    })
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  const proxy: SlowCancelProxy = {
    port,
    cancelDelayMs: 0,
    onCancel: undefined,
    get cancels() {
      return cancels
    },
    get delivered() {
      return delivered
    },
    urlFor(url) {
      const parsed = new URL(url)
      parsed.hostname = '127.0.0.1'
      parsed.port = String(port)
      return parsed.toString()
    },
    async close() {
      for (const timer of timers) clearTimeout(timer)
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return proxy
}
