import { createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { formatLsn, type Lsn, parseLsn } from './lsn.js'

/** Read-your-writes: the resolved `replica.readYourWrites` option. */
export interface ReadYourWritesSettings {
  /** HMAC key of the tokens (at least 16 characters): a client cannot forge one to pin reads on the primary. */
  readonly secret: string
  /** Response and request header carrying the token. */
  readonly header: string
  /** Cookie carrying the token too (HttpOnly, SameSite=Lax; Secure too for a __Secure-/__Host- name), or false. */
  readonly cookie: string | false
  /** How long a read waits for a replica to replay its write before it goes to the primary, ms. */
  readonly maxWait: number
}

/** Bytes of the HMAC kept in a token (128 bits). */
const SIGNATURE_BYTES = 16
/** How long the cookie lives: long enough to cover replication lag, short enough to expire. */
const COOKIE_MAX_AGE_SECONDS = 60
/** Cookie name prefixes browsers accept only on a cookie marked Secure (case-insensitive, as they match). */
const SECURE_PREFIX = /^__(secure|host)-/i

/**
 * The token a response carries after a write: `<commit LSN>.<HMAC>`. A later read-only request
 * that sends it back is served by a replica only once that replica has replayed the LSN.
 *
 * The HMAC covers the instance (`scope`: its name and its database's) with the LSN: positions of
 * one server mean nothing on another, and instances sharing a secret must not take each other's
 * tokens, which name positions their primary may not reach for a long time (each such read would
 * wait `maxWait` and go to the primary). A token of another scope is ignored like a forged one.
 * Not the host: the processes of one service may spell their primary differently (a name or its
 * address, a port from PGPORT), and must take each other's tokens; services on other servers
 * with databases of the same name need secrets of their own (docs/replicas.md).
 */
export class ReadYourWrites {
  readonly settings: ReadYourWritesSettings
  readonly #scope: string

  constructor(settings: ReadYourWritesSettings, scope: string) {
    this.settings = settings
    this.#scope = scope
  }

  #sign(lsn: string): Buffer {
    return createHmac('sha256', this.settings.secret)
      .update(this.#scope)
      .update('\0')
      .update(lsn)
      .digest()
      .subarray(0, SIGNATURE_BYTES)
  }

  token(lsn: Lsn): string {
    const text = formatLsn(lsn)
    return `${text}.${this.#sign(text).toString('base64url')}`
  }

  /** The LSN a valid token names; undefined for a missing, malformed or forged one. */
  verify(token: unknown): Lsn | undefined {
    if (typeof token !== 'string') return undefined
    const dot = token.indexOf('.')
    if (dot <= 0) return undefined
    const text = token.slice(0, dot)
    const lsn = parseLsn(text)
    if (lsn === undefined) return undefined
    const given = Buffer.from(token.slice(dot + 1), 'base64url')
    const expected = this.#sign(text)
    return given.length === expected.length && timingSafeEqual(given, expected) ? lsn : undefined
  }

  /** The position a request must read at least, from its header or cookie. */
  read(request: FastifyRequest): Lsn | undefined {
    const { header, cookie } = this.settings
    const fromHeader = request.headers[header]
    if (fromHeader !== undefined) return this.verify(Array.isArray(fromHeader) ? fromHeader[0] : fromHeader)
    if (cookie === false) return undefined
    const cookies = request.headers.cookie
    if (cookies === undefined) return undefined
    for (const part of cookies.split(';')) {
      const eq = part.indexOf('=')
      if (eq !== -1 && part.slice(0, eq).trim() === cookie) return this.verify(decodeCookie(part.slice(eq + 1).trim()))
    }
    return undefined
  }

  /** Puts the token of `lsn` on a response (before its headers go out). */
  write(reply: FastifyReply, lsn: Lsn): void {
    const token = this.token(lsn)
    reply.header(this.settings.header, token)
    const cookie = this.settings.cookie
    if (cookie !== false) {
      // A __Secure-/__Host- name is dropped by browsers without Secure (RFC 6265bis 4.1.3); the
      // cookie already has what __Host- needs besides (Path=/, no Domain).
      const secure = SECURE_PREFIX.test(cookie) ? '; Secure' : ''
      reply.header(
        'set-cookie',
        `${cookie}=${encodeURIComponent(token)}; Path=/; Max-Age=${COOKIE_MAX_AGE_SECONDS}; HttpOnly; SameSite=Lax${secure}`,
      )
    }
  }
}

/** A cookie value as the client sent it, percent-decoded; undefined when it is not valid encoding. */
function decodeCookie(value: string): string | undefined {
  try {
    return decodeURIComponent(value)
  } catch {
    // A client's malformed token is ignored like a forged one, never a 500.
    return undefined
  }
}
