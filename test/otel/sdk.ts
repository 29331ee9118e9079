import {
  type MeterProvider as ApiMeterProvider,
  type TracerProvider as ApiTracerProvider,
  type Attributes,
  context,
  metrics,
  trace,
} from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'

/** A reader that collects when the test asks, never on a timer. */
class OnDemandReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

export interface TestSdk {
  readonly tracerProvider: ApiTracerProvider
  readonly meterProvider: ApiMeterProvider
  /** Spans ended so far. */
  spans(): ReadableSpan[]
  /** One collection of every metric. */
  collect(): Promise<ResourceMetrics>
  reset(): void
  shutdown(): Promise<void>
}

/**
 * The SDK as an app would set it up, with in-memory export: an AsyncLocalStorage context
 * manager (what @fastify/otel and our spans need to find the active span), spans exported as
 * they end, metrics collected on demand. `global` also registers both providers globally.
 */
export function startTestSdk(options: { global?: boolean } = {}): TestSdk {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  const exporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
  const reader = new OnDemandReader()
  const meterProvider = new MeterProvider({ readers: [reader] })
  if (options.global) {
    trace.setGlobalTracerProvider(tracerProvider)
    metrics.setGlobalMeterProvider(meterProvider)
  }
  return {
    tracerProvider,
    meterProvider,
    spans: () => exporter.getFinishedSpans(),
    async collect() {
      const { resourceMetrics, errors } = await reader.collect()
      if (errors.length > 0) throw errors[0]
      return resourceMetrics
    },
    reset: () => exporter.reset(),
    async shutdown() {
      await tracerProvider.shutdown()
      await meterProvider.shutdown()
      trace.disable()
      metrics.disable()
      context.disable()
    },
  }
}

/** The span's parent span id, or undefined for a root. */
export const parentOf = (span: ReadableSpan): string | undefined => span.parentSpanContext?.spanId

/** The spans above `span`, nearest first (those exported so far). */
export function ancestors(span: ReadableSpan, all: readonly ReadableSpan[]): ReadableSpan[] {
  const byId = new Map(all.map((s) => [s.spanContext().spanId, s]))
  const chain: ReadableSpan[] = []
  for (let id = parentOf(span); id !== undefined; ) {
    const parent = byId.get(id)
    if (parent === undefined) break
    chain.push(parent)
    id = parentOf(parent)
  }
  return chain
}

/** Every string anywhere in the spans: attributes, events, status, names. */
export function spanStrings(spans: readonly ReadableSpan[]): string[] {
  const out: string[] = []
  const attributeStrings = (attributes: Attributes) => {
    for (const [key, value] of Object.entries(attributes)) {
      out.push(key)
      if (Array.isArray(value)) for (const v of value) out.push(String(v))
      else out.push(String(value))
    }
  }
  for (const span of spans) {
    out.push(span.name, span.status.message ?? '')
    attributeStrings(span.attributes)
    attributeStrings(span.resource.attributes)
    for (const event of span.events) {
      out.push(event.name)
      attributeStrings(event.attributes ?? {})
    }
  }
  return out
}
