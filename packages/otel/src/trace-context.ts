import type { LeaseDb } from '@fastify-pg-pool/core'
import { type Context, context, isSpanContextValid, TraceFlags, trace } from '@opentelemetry/api'
import type { FastifyRequest } from 'fastify'

/** Builds the application_name of a traced lease from its traceparent and route template. */
export type ApplicationNameFormat = (traceparent: string, route: string) => string

/**
 * What the server keeps of an application_name: NAMEDATALEN - 1 bytes. It cuts the rest when
 * the name is set, so the setting, pg_stat_activity and the server log (`%a`) all show the same
 * 63 bytes, and a W3C traceparent alone takes 55 of them.
 */
export const APPLICATION_NAME_BYTES = 63

/** Trace id of a traceparent (`00-<trace-id>-<span-id>-<flags>`). */
const traceIdOf = (traceparent: string) => traceparent.slice(3, 35)
const TRACE_ID_LENGTH = 32

/** The two ways to spend the 63 bytes. Both write the route as the server stores it (serverText). */
export const applicationNameFormats: Readonly<{
  traceparent: ApplicationNameFormat
  route: ApplicationNameFormat
}> = Object.freeze({
  /**
   * `<traceparent> <route>` (the default): the W3C traceparent whole, for tools that parse it
   * and to find the very span the lease was taken under; then the route, whole when it fits in
   * the 7 bytes left (`/items`), cut after them otherwise.
   */
  traceparent: (traceparent: string, route: string) => `${traceparent} ${serverText(route)}`,
  /**
   * `<route> <trace-id>`: the route whole up to 30 bytes as the server stores it (cut there,
   * never inside a character, so that the trace id always fits), then the trace id, which finds
   * the trace in any backend; no span id.
   */
  route: (traceparent: string, route: string) =>
    `${serverText(route, APPLICATION_NAME_BYTES - TRACE_ID_LENGTH - 1)} ${traceIdOf(traceparent)}`,
})

export const defaultApplicationNameFormat: ApplicationNameFormat = applicationNameFormats.traceparent

/**
 * `text` as PostgreSQL 16 and later store an application_name: printable ASCII as it is, every
 * other byte as `\xNN` (four bytes for one), before the 63-byte cut; PostgreSQL 15 and earlier
 * write `?` for it instead. Escaped here, the name reads the same on every server, and its
 * length is the length the server cuts: a route of UTF-8 characters that fitted in 30 bytes
 * grew past them on the server and pushed the trace id out. At most `limit` bytes, whole
 * characters only.
 */
export function serverText(text: string, limit = Number.POSITIVE_INFINITY): string {
  let out = ''
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0
    const stored =
      code >= 0x20 && code <= 0x7e
        ? char
        : Array.from(Buffer.from(char, 'utf8'), (byte) => `\\x${byte.toString(16).padStart(2, '0')}`).join('')
    if (out.length + stored.length > limit) break
    out += stored
  }
  return out
}

/** W3C traceparent of the span active in `ctx`, or undefined when there is none. */
export function traceparentOf(ctx: Context = context.active()): string | undefined {
  const spanContext = trace.getSpan(ctx)?.spanContext()
  if (spanContext === undefined || !isSpanContextValid(spanContext)) return undefined
  const sampled = (spanContext.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED
  return `00-${spanContext.traceId}-${spanContext.spanId}-${sampled ? '01' : '00'}`
}

/**
 * The application_name a lease taken in `ctx` should carry, or undefined when no trace is
 * active there. For the core's per-lease hook: called when the lease gets its connection, in
 * the request's async context.
 */
export function traceContextApplicationName(
  route: string,
  ctx: Context = context.active(),
  format: ApplicationNameFormat = defaultApplicationNameFormat,
): string | undefined {
  const traceparent = traceparentOf(ctx)
  return traceparent === undefined ? undefined : format(traceparent, route)
}

export interface TraceContextOptions {
  /**
   * application_name from traceparent and route; the server keeps its first 63 bytes. Default
   * `applicationNameFormats.traceparent` (`<traceparent> <route>`); `applicationNameFormats.route`
   * gives `<route> <trace-id>`.
   */
  format?: ApplicationNameFormat
}

/**
 * Trace context for the server, through the core's `onLease` option: each traced request's
 * connection gets `application_name = '<traceparent> <route>'` while the request holds it, so
 * that pg_stat_activity (and the server log's `%a`) show which trace and route a running
 * statement belongs to, within the 63 bytes the server keeps of the name.
 *
 * One statement per lease, never awaited: it rides in the same write as the request's first
 * statement, and the server runs them in order, so it costs no round trip. Its text is fixed
 * (the name is a parameter): postgres.js prepares it once, and its statement cache, which
 * never evicts, does not grow. A comment in each statement would make every traced statement
 * a new text, a new prepared statement, forever.
 *
 * The core's `leaseApplicationName` option does the same without a hook per request, and for
 * `app.db` too: `leaseApplicationName: (_request, route) => traceContextApplicationName(route)`
 * (the umbrella's `otel: { traceContext: true }`). This hook is for apps that compose `onLease`
 * already. The default session reset puts the pool's name back before the next holder; with
 * `sessionReset: 'rollback'` or `'never'` only the core option does.
 */
export function traceContextOnLease(options: TraceContextOptions = {}): (request: FastifyRequest, db: LeaseDb) => void {
  const format = options.format ?? defaultApplicationNameFormat
  return (request, db) => {
    const name = traceContextApplicationName(request.routeOptions.url ?? 'unknown', context.active(), format)
    if (name === undefined) return
    // catch() sends it (postgres.js runs a query when it is awaited or chained) and keeps a
    // failure from becoming an unhandled rejection: the request's own statements still run.
    db`select pg_catalog.set_config('application_name', ${name}, false)`.catch(() => {})
  }
}
