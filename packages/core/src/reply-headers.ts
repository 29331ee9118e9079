import { validateHeaderName, validateHeaderValue } from 'node:http'
import type { FastifyReply } from 'fastify'

/**
 * Headers HTTP/2 forbids (connection-specific), which Node throws on writing there (its
 * compatibility layer drops `connection` with a warning instead); `te` only with another value
 * than `trailers`.
 */
const http2Forbidden = new Set(['keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings'])

function http2Refuses(name: string, value: unknown): boolean {
  const lower = name.toLowerCase()
  return http2Forbidden.has(lower) || (lower === 'te' && String(value).toLowerCase() !== 'trailers')
}

/**
 * The error Node would throw writing the reply's head, with what caused it taken off the reply, or
 * undefined when Node takes it whole: a header value past Latin-1 (`ERR_INVALID_CHAR`, such as a
 * file name in `content-disposition`), a header name that is no token, a connection-specific header
 * over HTTP/2, a status code outside 100–999, a status message with a control character. Asked
 * before a route transaction's COMMIT, so that a reply that cannot be written rolls its work back,
 * and after a reply sent later than onSend threw, so that the error reply Fastify sends instead
 * can be written.
 */
export function takeUnwritable(reply: FastifyReply): Error | undefined {
  let refusal: Error | undefined
  const raw = reply.raw as { statusCode?: unknown; statusMessage?: unknown; stream?: unknown }
  const http2 = raw.stream !== undefined
  const status = raw.statusCode
  // As Node reads it (`statusCode |= 0`): 200.5 is a 200.
  const code = typeof status === 'number' ? status | 0 : Number.NaN
  if (!(code >= 100 && code <= 999)) {
    refusal = Object.assign(new RangeError(`Invalid status code: ${String(status)}`), {
      code: 'ERR_HTTP_INVALID_STATUS_CODE',
    })
    raw.statusCode = 500
  }
  if (typeof raw.statusMessage === 'string' && /[^\t\x20-\x7e\x80-\xff]/.test(raw.statusMessage)) {
    refusal ??= Object.assign(new TypeError('Invalid character in statusMessage'), { code: 'ERR_INVALID_CHAR' })
    raw.statusMessage = ''
  }
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    try {
      // HTTP/1's rules: over HTTP/2, Node takes any value (a name past Latin-1 in
      // content-disposition) and refuses connection-specific headers instead.
      if (!http2) {
        validateHeaderName(name)
        for (const one of Array.isArray(value) ? value : [value]) {
          if (one !== undefined) validateHeaderValue(name, String(one))
        }
      } else if (http2Refuses(name, value)) {
        throw Object.assign(new TypeError(`HTTP/2 connection-specific header: ${name}`), {
          code: 'ERR_HTTP2_INVALID_CONNECTION_HEADERS',
        })
      }
    } catch (error) {
      refusal ??= error as Error
      reply.removeHeader(name)
    }
  }
  return refusal
}
