import type { LeaseDb } from '@fastify-pg-pool/core'
import { type Context, context, isSpanContextValid, TraceFlags, trace } from '@opentelemetry/api'
import type { FastifyRequest } from 'fastify'

/** Builds the application_name of a traced lease from its traceparent and route template. */
export type ApplicationNameFormat = (traceparent: string, route: string) => string

/**
 * `<traceparent> <route>`. pg_stat_activity shows the first 63 bytes of application_name
 * (NAMEDATALEN - 1), so the traceparent (55 bytes) comes first and is always whole there; the
 * route follows, whole up to 7 bytes there, and whole at any length in `current_setting` and in
 * the server log (`%a` in log_line_prefix).
 */
export const defaultApplicationNameFormat: ApplicationNameFormat = (traceparent, route) => `${traceparent} ${route}`

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
  /** application_name from traceparent and route. Default `<traceparent> <route>`. */
  format?: ApplicationNameFormat
}

/**
 * Trace context for the server, through the core's `onLease` option: each traced request's
 * connection gets `application_name = '<traceparent> <route>'` while the request holds it, so
 * that pg_stat_activity (and the server log) show which trace and route a running statement
 * belongs to.
 *
 * One statement per lease, never awaited: it rides in the same write as the request's first
 * statement, and the server runs them in order, so it costs no round trip. Its text is fixed
 * (the name is a parameter): postgres.js prepares it once, and its statement cache, which
 * never evicts, does not grow. A comment in each statement would make every traced statement
 * a new text, a new prepared statement, forever.
 *
 * As an `onLease` hook it has two costs the proposed core hook would not: `set_config` marks
 * the session as changed, so the pool resets it (awaited) before the next request gets it; and
 * `onLease` cannot be combined with pipelined routes (`config.db.pipeline`), which the core
 * refuses at declaration.
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
