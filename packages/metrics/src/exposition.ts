import { openMetricsContentType, prometheusContentType, type Registry } from 'prom-client'

export type ExpositionFormat = 'prometheus' | 'openmetrics'

export interface Scrape {
  readonly contentType: string
  readonly body: string
}

/**
 * Picks the format from an Accept header: OpenMetrics when the client ranks
 * `application/openmetrics-text` at least as high as plain text (Prometheus 2.5+ asks for it
 * first), Prometheus text otherwise, and when there is no header.
 */
export function negotiate(accept: string | undefined): ExpositionFormat {
  // Media types and parameter names are case-insensitive (RFC 9110).
  const ranges = accept?.toLowerCase()
  if (ranges === undefined || !ranges.includes('openmetrics')) return 'prometheus'
  let open = 0
  let text = 0
  for (const range of ranges.split(',')) {
    const [type = '', ...params] = range.split(';')
    let q = 1
    for (const param of params) {
      const [key, value] = param.split('=')
      if (key?.trim() === 'q' && value !== undefined) q = Number(value)
    }
    if (!Number.isFinite(q)) continue
    const mediaType = type.trim()
    if (mediaType === 'application/openmetrics-text') open = Math.max(open, q)
    else if (mediaType === 'text/plain' || mediaType === '*/*' || mediaType === 'text/*') text = Math.max(text, q)
  }
  return open > 0 && open >= text ? 'openmetrics' : 'prometheus'
}

/** The registry's metrics in the asked format. */
export async function scrape(registry: Registry, accept: string | undefined): Promise<Scrape> {
  if (negotiate(accept) === 'prometheus') {
    return { contentType: prometheusContentType, body: await registry.metrics() }
  }
  // prom-client renders OpenMetrics only from a registry switched to it, and renaming its
  // counters for that (it strips `_total` from the metric objects, for good): render here.
  return { contentType: openMetricsContentType, body: renderOpenMetrics(await registry.getMetricsAsJSON()) }
}

interface MetricJson {
  readonly name: string
  readonly help: string
  readonly type: unknown
  readonly values: readonly { value: number; labels: object; metricName?: string | undefined }[]
}

const knownTypes = new Set(['counter', 'gauge', 'histogram', 'summary'])

/** OpenMetrics 1.0 text: counters as `<family>_total`, one family per metric, `# EOF` last. */
export function renderOpenMetrics(metrics: readonly MetricJson[]): string {
  const lines: string[] = []
  for (const metric of metrics) {
    const counter = metric.type === 'counter'
    const family = counter ? metric.name.replace(/_total$/, '') : metric.name
    const type = typeof metric.type === 'string' && knownTypes.has(metric.type) ? metric.type : 'unknown'
    lines.push(`# TYPE ${family} ${type}`, `# HELP ${family} ${escapeText(metric.help)}`)
    for (const sample of metric.values) {
      const name = counter ? `${family}_total` : (sample.metricName ?? metric.name)
      const labels = Object.entries(sample.labels as Record<string, unknown>)
      const labelText =
        labels.length === 0
          ? ''
          : `{${labels.map(([key, value]) => `${key}="${escapeText(String(value))}"`).join(',')}}`
      lines.push(`${name}${labelText} ${formatValue(sample.value)}`)
    }
  }
  lines.push('# EOF', '')
  return lines.join('\n')
}

function escapeText(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN'
  if (value === Number.POSITIVE_INFINITY) return '+Inf'
  if (value === Number.NEGATIVE_INFINITY) return '-Inf'
  return String(value)
}
