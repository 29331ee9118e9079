import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
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

/**
 * One exchange on a socket of its own, written as raw HTTP/1.1 (`wire`; ask `Connection: close`):
 * all the server sent, and how the socket ended ('end', 'error <code>', or 'no end' past `timeoutMs`).
 */
export function rawExchange(port: number, wire: string, timeoutMs = 8_000): Promise<{ text: string; how: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ text, how: 'no end' })
    }, timeoutMs)
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
    })
    socket.on('end', () => {
      clearTimeout(timer)
      resolve({ text, how: 'end' })
    })
    socket.on('error', (error) => {
      clearTimeout(timer)
      resolve({ text, how: `error ${(error as { code?: string }).code}` })
    })
    socket.write(wire)
  })
}
