import { type Agent, request as httpRequest } from 'node:http'

/** One HTTP answer, read whole. */
export interface Answer {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
}

/**
 * One request over a real socket. Without `agent` it uses a socket of its own and asks
 * `Connection: close` (a keep-alive socket in flight when close() begins would hold the server
 * open, which is a separate test: keepalive-shutdown). Settles with 'error <code>' when the
 * connection is refused or reset.
 */
export function send(
  url: string,
  options: { method?: string; agent?: Agent; headers?: Record<string, string>; body?: string } = {},
): Promise<Answer | `error ${string}`> {
  const { method = 'GET', agent, body } = options
  const headers: Record<string, string> = {
    ...(agent === undefined ? { connection: 'close' } : {}),
    ...options.headers,
  }
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body))
  return new Promise((resolve) => {
    const req = httpRequest(url, { method, agent: agent ?? false, headers }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        text += chunk
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
      res.on('error', (error: Error & { code?: string }) => resolve(`error ${error.code ?? error.message}`))
    })
    req.on('error', (error: Error & { code?: string }) => resolve(`error ${error.code ?? error.message}`))
    req.end(body)
  })
}

/** The answer, or throws naming the connection error. */
export async function sendOk(...args: Parameters<typeof send>): Promise<Answer> {
  const answer = await send(...args)
  if (typeof answer === 'string') throw new Error(`${args[0]}: ${answer}`)
  return answer
}

export const codeOf = (answer: Answer): string | undefined => {
  try {
    return (JSON.parse(answer.body) as { code?: string }).code
  } catch {
    return undefined
  }
}

/** RFC 9110 §10.2.3: Retry-After = HTTP-date / delay-seconds, delay-seconds = 1*DIGIT. */
export const DELAY_SECONDS = /^[0-9]+$/
