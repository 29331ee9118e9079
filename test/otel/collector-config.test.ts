import { readFileSync } from 'node:fs'
import { describe, expect, test } from 'vitest'
import { parse } from 'yaml'

const dir = new URL('../../examples/observability/', import.meta.url)
const read = (file: string) => readFileSync(new URL(file, dir), 'utf8')

type Components = Record<string, Record<string, unknown> | null>
interface Pipeline {
  receivers?: string[]
  processors?: string[]
  exporters?: string[]
}
interface CollectorConfig {
  receivers: Components
  processors: Components
  exporters: Components
  extensions: Components
  service: { extensions?: string[]; pipelines: Record<string, Pipeline> }
}

const config = parse(read('otel-collector.yaml')) as CollectorConfig
const pipelines = Object.entries(config.service.pipelines)
/** A component id is `type` or `type/name`. */
const typeOf = (id: string) => id.split('/')[0]

describe('examples/observability/otel-collector.yaml', () => {
  test('every pipeline is of a signal type and names only components the file defines', () => {
    expect(pipelines.length).toBeGreaterThan(0)
    for (const [id, pipeline] of pipelines) {
      expect(['traces', 'metrics', 'logs'], id).toContain(typeOf(id))
      expect(pipeline.receivers?.length, `${id} receivers`).toBeGreaterThan(0)
      expect(pipeline.exporters?.length, `${id} exporters`).toBeGreaterThan(0)
      for (const kind of ['receivers', 'processors', 'exporters'] as const) {
        for (const name of pipeline[kind] ?? [])
          expect(Object.keys(config[kind]), `${id}: ${kind} ${name}`).toContain(name)
      }
    }
    for (const name of config.service.extensions ?? []) expect(Object.keys(config.extensions)).toContain(name)
  })

  test('every component the file defines is used (a defined one left out is a silent mistake)', () => {
    for (const kind of ['receivers', 'processors', 'exporters'] as const) {
      const used = new Set(pipelines.flatMap(([, pipeline]) => pipeline[kind] ?? []))
      for (const name of Object.keys(config[kind])) expect(used, `${kind} ${name}`).toContain(name)
    }
    for (const name of Object.keys(config.extensions)) expect(config.service.extensions).toContain(name)
  })

  test('OTLP in, Prometheus out: metrics from the otlp receiver reach the prometheus exporter', () => {
    const metrics = config.service.pipelines.metrics as Pipeline
    expect(metrics.receivers).toContain('otlp')
    expect(metrics.exporters).toContain('prometheus')
    expect(config.service.pipelines.traces?.receivers).toContain('otlp')
    // The SDK's OTLP/HTTP exporters send to localhost:4318 unless told otherwise.
    const http = (config.receivers.otlp as { protocols: { http: { endpoint: string } } }).protocols.http
    expect(http.endpoint).toMatch(/:4318$/)
    // memory_limiter first, as the collector asks, then batch.
    for (const [id, pipeline] of pipelines) expect(pipeline.processors, id).toEqual(['memory_limiter', 'batch'])
  })

  test('prometheus-otel.yml scrapes the endpoint the prometheus exporter listens on', () => {
    const exporter = config.exporters.prometheus as { endpoint: string }
    const prometheus = parse(read('prometheus-otel.yml')) as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[]
    }
    const targets = prometheus.scrape_configs.flatMap((job) => job.static_configs.flatMap((s) => s.targets))
    expect(targets).toEqual([exporter.endpoint])
  })

  test('the README shows the three-line setup with these files', () => {
    const readme = read('README.md')
    const block = /## OpenTelemetry[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? ''
    const lines = block.split('\n').filter((line) => line.trim() !== '' && !line.trim().startsWith('#'))
    expect(lines).toHaveLength(3)
    expect(lines[0]).toContain('otel-collector.yaml')
    expect(lines[1]).toContain('src/otel-server.js')
    expect(lines[2]).toContain('prometheus-otel.yml')
  })
})
