import { request as httpRequest } from 'node:http'
import type { FastifyInstance } from 'fastify'

export async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
}

/** Starts a GET over a real socket and returns a function that hangs up on it. */
export function startRequest(url: string): { abort: () => void; done: Promise<number | 'aborted'> } {
  const req = httpRequest(url, { agent: false })
  const done = new Promise<number | 'aborted'>((resolve) => {
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve('aborted'))
    req.on('close', () => resolve('aborted'))
  })
  req.end()
  return { abort: () => req.destroy(), done }
}

/** Starts a POST with a JSON body over a real socket and returns a function that hangs up on it. */
export function startPost(url: string, body: unknown): { abort: () => void; done: Promise<number | 'aborted'> } {
  const text = JSON.stringify(body)
  const req = httpRequest(url, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
  })
  const done = new Promise<number | 'aborted'>((resolve) => {
    req.on('response', (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve('aborted'))
    req.on('close', () => resolve('aborted'))
  })
  req.end(text)
  return { abort: () => req.destroy(), done }
}
