// probe-third-streams: one HTTP/1.1 exchange that keeps the response's headers, and whether its
// body ended whole.
import { request as httpRequest } from 'node:http'

export interface Seen {
  status: number | 'no answer' | 'error'
  headers: Record<string, string | string[] | undefined>
  body: string
  whole: boolean
}

export function see(url: string, method = 'GET', patienceMs = 8_000): Promise<Seen> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method, agent: false })
    const timer = setTimeout(() => {
      req.destroy()
      resolve({ status: 'no answer', headers: {}, body: '', whole: false })
    }, patienceMs)
    req.on('error', () => {
      clearTimeout(timer)
      resolve({ status: 'error', headers: {}, body: '', whole: false })
    })
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, whole: true })
      })
      res.on('error', () => {
        clearTimeout(timer)
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, whole: false })
      })
      res.on('aborted', () => undefined)
    })
    req.end()
  })
}
