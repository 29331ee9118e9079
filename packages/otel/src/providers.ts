import { createRequire } from 'node:module'
import {
  createNoopMeter,
  type Meter,
  type MeterProvider,
  metrics,
  ProxyTracerProvider,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api'

export const INSTRUMENTATION_NAME = '@fastify-pg-pool/otel'
/** The instrumentation scope's version: this package's. */
export const INSTRUMENTATION_VERSION: string = createRequire(import.meta.url)('../package.json').version

/** What @opentelemetry/api hands out while no SDK is registered. */
const NOOP_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate()
const NOOP_METER = createNoopMeter()

/** A ProxyTracerProvider of any copy of the API, described by shape. */
interface Delegating {
  getDelegate(): TracerProvider
}

/**
 * The tracer to use, or undefined while no SDK is registered (the global provider is the API's
 * proxy with no delegate, or its no-op). Undefined means: subscribe to nothing, so that the
 * core builds no message and pays nothing.
 */
export function realTracer(given: TracerProvider | undefined): Tracer | undefined {
  const provider = given ?? trace.getTracerProvider()
  const delegating = provider as Partial<Delegating>
  const target = typeof delegating.getDelegate === 'function' ? delegating.getDelegate() : provider
  if (target === NOOP_TRACER_PROVIDER) return undefined
  return provider.getTracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION)
}

/** The meter to use, or undefined while no SDK is registered. */
export function realMeter(given: MeterProvider | undefined): Meter | undefined {
  const provider = given ?? metrics.getMeterProvider()
  const meter = provider.getMeter(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION)
  return meter === NOOP_METER ? undefined : meter
}
