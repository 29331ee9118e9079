import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'

/**
 * - `pass`: forward both ways.
 * - `delay`: forward both ways, each chunk `delayMs` late.
 * - `blackhole`: accept and read, never forward or answer; connections already open freeze too
 *   (what a SIGSTOPped server or a dropped network path looks like from the client).
 * - `reset`: destroy every open and every new client socket with a TCP RST.
 */
export type ProxyMode = 'pass' | 'delay' | 'blackhole' | 'reset'

export interface TcpProxy {
  /** 127.0.0.1 port the proxy listens on. */
  readonly port: number
  readonly mode: ProxyMode
  /** Client connections accepted since the proxy started. */
  readonly accepted: number
  /** Client connections open now. */
  readonly open: number
  /**
   * Called with every chunk a client sends, before it is forwarded: a test can switch modes at
   * an exact point of the protocol (e.g. when a given query goes out).
   */
  onClientData: ((chunk: Buffer) => void) | undefined
  /**
   * How long to hold a chunk a client sends before forwarding it (0: at once), decided per chunk:
   * e.g. only a CancelRequest (see `isCancelRequest`), to make a cancel land late.
   */
  clientChunkDelay: ((chunk: Buffer) => number) | undefined
  /** Called with every chunk the server sends; return false to drop it (the client never sees it). */
  onServerData: ((chunk: Buffer) => boolean | undefined) | undefined
  /** Destroys every open connection (both sides), leaving the proxy listening. */
  cutAll(): void
  /**
   * Called with the index (from 0) of every client connection accepted: the proxy connects it
   * upstream that many ms late (a slow connection setup: a busy server forking a backend, a
   * pooler logging in), while its data waits.
   */
  connectDelay: ((index: number) => number) | undefined
  /** Switches mode; applies to open connections too. `delayMs` is used by 'delay'. */
  setMode(mode: ProxyMode, delayMs?: number): void
  /** Returns a URL with host and port replaced by the proxy's. */
  urlFor(url: string): string
  close(): Promise<void>
}

interface Pipe {
  readonly client: Socket
  readonly upstream: Socket
}

/** A TCP proxy on 127.0.0.1 in front of `targetPort`, switchable at runtime. */
export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let mode: ProxyMode = 'pass'
  let delayMs = 0
  let accepted = 0
  const pipes = new Set<Pipe>()

  const forward = (from: Socket, to: Socket, tap: (chunk: Buffer) => number | boolean) => {
    from.on('data', (chunk: Buffer) => {
      const verdict = tap(chunk)
      if (verdict === false) return
      if (mode === 'blackhole' || mode === 'reset') return
      if (typeof verdict === 'number' && verdict > 0) {
        from.pause()
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk)
          from.resume()
        }, verdict).unref()
        return
      }
      if (mode === 'delay' && delayMs > 0) {
        // Pause while the chunk waits so that order is kept.
        from.pause()
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk)
          from.resume()
        }, delayMs).unref()
        return
      }
      if (!to.destroyed) to.write(chunk)
    })
  }

  const server: Server = createServer((client) => {
    accepted++
    client.on('error', () => {})
    if (mode === 'reset') {
      client.resetAndDestroy()
      return
    }
    const delay = proxy.connectDelay?.(accepted - 1) ?? 0
    if (delay <= 0) return open(client)
    // Unread until then: a socket without a 'data' listener keeps what arrives.
    const timer = setTimeout(() => {
      if (!client.destroyed) open(client)
    }, delay)
    client.once('close', () => clearTimeout(timer))
  })

  const open = (client: Socket) => {
    const upstream = tcpConnect(targetPort, targetHost)
    upstream.on('error', () => {})
    const pipe: Pipe = { client, upstream }
    pipes.add(pipe)
    forward(client, upstream, (chunk) => {
      proxy.onClientData?.(chunk)
      return proxy.clientChunkDelay?.(chunk) ?? 0
    })
    forward(upstream, client, (chunk) => proxy.onServerData?.(chunk) !== false)
    const drop = () => {
      pipes.delete(pipe)
      // A blackhole never tells the other side anything, not even that its peer left.
      if (mode === 'blackhole') {
        if (client.destroyed) upstream.destroy()
        return
      }
      client.destroy()
      upstream.destroy()
    }
    client.on('close', drop)
    upstream.on('close', drop)
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port

  const proxy: TcpProxy = {
    port,
    onClientData: undefined,
    clientChunkDelay: undefined,
    onServerData: undefined,
    cutAll() {
      for (const pipe of pipes) {
        pipe.client.destroy()
        pipe.upstream.destroy()
      }
      pipes.clear()
    },
    connectDelay: undefined,
    get mode() {
      return mode
    },
    get accepted() {
      return accepted
    },
    get open() {
      return pipes.size
    },
    setMode(next, ms = 0) {
      mode = next
      delayMs = ms
      if (next === 'reset') {
        for (const pipe of pipes) {
          pipe.client.resetAndDestroy()
          pipe.upstream.destroy()
        }
        pipes.clear()
      }
    },
    urlFor(url) {
      const parsed = new URL(url)
      parsed.hostname = '127.0.0.1'
      parsed.port = String(port)
      return parsed.toString()
    },
    async close() {
      for (const pipe of pipes) {
        pipe.client.destroy()
        pipe.upstream.destroy()
      }
      pipes.clear()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return proxy
}

/** PostgreSQL's CancelRequest: length 16, code 80877102, backend pid, secret key. */
export function isCancelRequest(chunk: Buffer): boolean {
  return chunk.length >= 8 && chunk.readInt32BE(0) === 16 && chunk.readInt32BE(4) === 80877102
}
