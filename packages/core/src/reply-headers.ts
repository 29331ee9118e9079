import { validateHeaderName, validateHeaderValue } from 'node:http'
import type { FastifyReply } from 'fastify'

/**
 * The error Node would throw writing the reply's headers (`ERR_INVALID_CHAR` for a value past
 * Latin-1, such as a file name in `content-disposition`; `ERR_INVALID_HTTP_TOKEN` for a name), with
 * the offending headers taken off the reply, or undefined when Node takes them all. Asked before a
 * route transaction's COMMIT, so that a reply that cannot be written rolls its work back, and after
 * a reply sent later than onSend threw, so that the error reply Fastify sends instead can be.
 */
export function takeRefusedHeaders(reply: FastifyReply): Error | undefined {
  let refusal: Error | undefined
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    try {
      validateHeaderName(name)
      for (const one of Array.isArray(value) ? value : [value]) {
        if (one !== undefined) validateHeaderValue(name, String(one))
      }
    } catch (error) {
      refusal ??= error as Error
      reply.removeHeader(name)
    }
  }
  return refusal
}
