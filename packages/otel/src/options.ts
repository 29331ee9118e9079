import { optionKit, type PgPoolView } from '@fastify-pg-pool/core'
import type { MeterProvider, TracerProvider } from '@opentelemetry/api'
import type { FastifyInstance } from 'fastify'
import { defaultPoolName, type PoolNamer } from './pool-identity.js'

const { boolean, describe, fastifyRegisterKeys, invalidOption, resolveTable } = optionKit

/** Picks the pools to instrument from the app (named instances and replicas add more). */
export type PoolSelector = (app: FastifyInstance) => readonly PgPoolView[]

export interface PgPoolOtelOptions {
  /** Where spans go. Default: the global provider, as the SDK registered it. */
  tracerProvider?: TracerProvider | undefined
  /** Where metrics go. Default: the global provider, as the SDK registered it. */
  meterProvider?: MeterProvider | undefined
  /** Spans of connection waits, statements and route transactions, refusal events. Default true. */
  traces?: boolean | undefined
  /** The database-client connection-pool and operation metrics. Default true. */
  metrics?: boolean | undefined
  /**
   * Record `db.query.text` on statement spans: the statement as sent, `$1`.. for values, never
   * the values. Off by default: a statement run with `unsafe()` may carry literals in its text.
   */
  queryText?: boolean | undefined
  /** `db.client.connection.pool.name` of a pool. Default: `host:port/database`, or the instance's name. */
  poolName?: PoolNamer | undefined
  /**
   * The pools to instrument. Default: every pool of `app.pgPools` (each instance's primary and
   * replicas), and those registered after this plugin.
   */
  pools?: PoolSelector | undefined
}

export interface ResolvedOtelOptions {
  readonly tracerProvider: TracerProvider | undefined
  readonly meterProvider: MeterProvider | undefined
  readonly traces: boolean
  readonly metrics: boolean
  readonly queryText: boolean
  readonly poolName: PoolNamer
  readonly pools: PoolSelector
}

/** A provider by shape: any copy of @opentelemetry/api, any SDK. */
function provider<P>(method: 'getTracer' | 'getMeter', kind: string): optionKit.OptionSpec<P | undefined> {
  return {
    read(raw, name) {
      if (raw === undefined) return undefined
      if (typeof raw !== 'object' || raw === null || typeof (raw as Record<string, unknown>)[method] !== 'function') {
        throw invalidOption(name, `expected a ${kind} (an object with ${method}()), got ${describe(raw)}`)
      }
      return raw as P
    },
  }
}

function fn<F>(fallback: F, shape: string): optionKit.OptionSpec<F> {
  return {
    read(raw, name) {
      if (raw === undefined) return fallback
      if (typeof raw !== 'function') throw invalidOption(name, `expected a function ${shape}, got ${describe(raw)}`)
      return raw as F
    },
  }
}

/** The default selection: every pool the app has (the plugin also follows those added later). */
export const defaultPools: PoolSelector = (app) => app.pgPools.all()

const table = {
  tracerProvider: provider<TracerProvider>('getTracer', 'TracerProvider'),
  meterProvider: provider<MeterProvider>('getMeter', 'MeterProvider'),
  traces: boolean(true),
  metrics: boolean(true),
  queryText: boolean(false),
  poolName: fn<PoolNamer>(defaultPoolName, '(view) => string'),
  pools: fn<PoolSelector>(defaultPools, '(app) => PgPoolView[]'),
} satisfies Record<keyof PgPoolOtelOptions, unknown>

/** Validates the options once, at register, and freezes them. */
export function resolveOtelOptions(opts: PgPoolOtelOptions | undefined): ResolvedOtelOptions {
  return resolveTable('otel', opts, table, { ignore: fastifyRegisterKeys })
}
