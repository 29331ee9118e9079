import { context, metrics, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base'

/**
 * The OpenTelemetry SDK, registered globally, exporting OTLP/HTTP (protobuf) to the collector at
 * OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318): spans in batches, metrics every
 * `exportIntervalMillis`. Start it before building the app; `flush()` exports what is pending
 * now, `shutdown()` flushes and stops.
 */
export function startOtel({ serviceName = 'fastify-pg-pool-example', exportIntervalMillis = 5_000 } = {}) {
  const resource = resourceFromAttributes({ 'service.name': serviceName })
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  const tracerProvider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  })
  const meterProvider = new MeterProvider({
    resource,
    readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter(), exportIntervalMillis })],
  })
  trace.setGlobalTracerProvider(tracerProvider)
  metrics.setGlobalMeterProvider(meterProvider)
  return {
    async flush() {
      await Promise.all([tracerProvider.forceFlush(), meterProvider.forceFlush()])
    },
    async shutdown() {
      await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()])
    },
  }
}
