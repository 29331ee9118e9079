import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'

/**
 * A TCP proxy in front of PostgreSQL that holds a server chunk holding a COMMIT's CommandComplete
 * until `holdCommitAnswer()` resolves (the server committed; its answer is on the wire), in order
 * with what follows.
 */
export interface CommitAnswerProxy {
  readonly port: number
  holdCommitAnswer: (() => Promise<void>) | undefined
  urlFor(url: string): string
  close(): Promise<void>
}

const commitTag = Buffer.from('COMMIT\0', 'latin1')
/** A session reset's answer holds a COMMIT too, after its own BEGIN. */
const beginTag = Buffer.from('BEGIN\0', 'latin1')

export async function startCommitAnswerProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<CommitAnswerProxy> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    sockets.add(client)
    client.on('error', () => {})
    const upstream = tcpConnect(targetPort, targetHost)
    sockets.add(upstream)
    upstream.on('error', () => {})
    client.on('data', (chunk: Buffer) => {
      if (!upstream.destroyed) upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      const hold = proxy.holdCommitAnswer
      if (hold !== undefined && chunk.includes(commitTag) && !chunk.includes(beginTag)) {
        proxy.holdCommitAnswer = undefined
        upstream.pause()
        void hold().then(() => {
          if (!client.destroyed) client.write(chunk)
          upstream.resume()
        })
        return
      }
      if (!client.destroyed) client.write(chunk)
    })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as { port: number }).port
  const proxy: CommitAnswerProxy = {
    port,
    holdCommitAnswer: undefined,
    urlFor(url) {
      const parsed = new URL(url)
      parsed.hostname = '127.0.0.1'
      parsed.port = String(port)
      return parsed.toString()
    },
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return proxy
}
