import http2 from 'node:http2'

/** What an HTTP/2 client got: status and headers (if any came), body, and the stream's error code. */
export interface H2Answer {
  status: number | undefined
  headers: http2.IncomingHttpHeaders | undefined
  body: string
  error: string | undefined
}

/**
 * One HTTP/2 request (h2c) on a session of its own: resolves once its stream closed, or with
 * `error: 'no end'` after `timeoutMs`. A `body` goes as text/plain.
 */
export function h2Request(
  port: number,
  path: string,
  options: { method?: string | undefined; body?: string | undefined; timeoutMs?: number | undefined } = {},
): Promise<H2Answer> {
  const { method = 'GET', body, timeoutMs = 8_000 } = options
  const session = http2.connect(`http://127.0.0.1:${port}`)
  session.on('error', () => {})
  const stream = session.request({
    ':path': path,
    ':method': method,
    ...(body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) }),
  })
  const answer: H2Answer = { status: undefined, headers: undefined, body: '', error: undefined }
  stream.on('response', (headers) => {
    answer.headers = headers
    answer.status = Number(headers[':status'])
  })
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    answer.body += chunk
  })
  stream.on('error', (error) => {
    answer.error = (error as { code?: string }).code ?? error.message
  })
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      answer.error = 'no end'
      session.destroy()
      resolve(answer)
    }, timeoutMs)
    stream.on('close', () => {
      clearTimeout(timer)
      session.close()
      resolve(answer)
    })
    stream.end(body)
  })
}
