import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-base'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'

/** Counts starts and ends of every span: `open` are those started and never ended. */
export class Tracking implements SpanProcessor {
  readonly open = new Map<Span, string>()
  readonly endCalls = new Map<ReadableSpan, number>()
  onStart(span: Span): void {
    this.open.set(span, span.name)
  }
  onEnd(span: ReadableSpan): void {
    this.open.delete(span as Span)
    this.endCalls.set(span, (this.endCalls.get(span) ?? 0) + 1)
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

export interface TracedProvider {
  readonly provider: BasicTracerProvider
  readonly exporter: InMemorySpanExporter
  readonly tracking: Tracking
  ours(): ReadableSpan[]
}

export function tracedProvider(): TracedProvider {
  const exporter = new InMemorySpanExporter()
  const tracking = new Tracking()
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter), tracking] })
  return {
    provider,
    exporter,
    tracking,
    ours: () => exporter.getFinishedSpans().filter((s) => s.instrumentationScope.name === '@fastify-pg-pool/otel'),
  }
}
