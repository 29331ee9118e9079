import type { MetricValueWithName, Registry } from 'prom-client'

interface HistogramJson {
  readonly name: string
  readonly help: string
  readonly type: 'histogram'
  readonly aggregator: 'sum'
  readonly values: MetricValueWithName<string>[]
}

/** One label set's counts: observing is a bucket search and three additions. */
export class HistogramSeries {
  readonly labels: Readonly<Record<string, string>>
  /** Per-bucket counts, not cumulative (the last slot is above every bound). */
  readonly counts: Float64Array
  readonly #bounds: readonly number[]
  sum = 0
  count = 0

  constructor(labels: Readonly<Record<string, string>>, bounds: readonly number[]) {
    this.labels = labels
    this.#bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(value: number): void {
    const bounds = this.#bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    ;(this.counts[i] as number)++
    this.sum += value
    this.count++
  }
}

export interface FastHistogramConfiguration {
  readonly name: string
  readonly help: string
  readonly labelNames?: readonly string[]
  readonly buckets: readonly number[]
  readonly registers: readonly Registry[]
}

/**
 * A histogram registered in a prom-client registry like its own, for the request path:
 * prom-client's `observe(labels, v)` builds a labels hash string (and garbage) on every call,
 * which the CPU profile of a saturated app showed as one of its larger costs. Here a caller
 * looks a series up once per label set and observes on it; the exposition format is built only
 * when scraped, in the same shape as prom-client's Histogram.
 */
export class FastHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly labelNames: readonly string[]
  readonly #bounds: readonly number[]
  readonly #series = new Map<string, HistogramSeries>()

  constructor(config: FastHistogramConfiguration) {
    this.name = config.name
    this.help = config.help
    this.labelNames = config.labelNames ?? []
    this.#bounds = [...config.buckets].sort((a, b) => a - b)
    for (const registry of config.registers) registry.registerMetric(this as never)
  }

  /** The series of one label set (created at 0 on first use). Keep it: lookups cost. */
  series(labels: Readonly<Record<string, string>> = {}): HistogramSeries {
    const key = this.labelNames.map((name) => labels[name] ?? '').join('\u0000')
    let series = this.#series.get(key)
    if (series === undefined) {
      const own: Record<string, string> = {}
      for (const name of this.labelNames) own[name] = labels[name] ?? ''
      series = new HistogramSeries(own, this.#bounds)
      this.#series.set(key, series)
    }
    return series
  }

  /** What prom-client's registry renders: the shape of its own Histogram's get(). */
  async get(): Promise<HistogramJson> {
    const values: MetricValueWithName<string>[] = []
    const bucket = `${this.name}_bucket`
    for (const series of this.#series.values()) {
      let cumulative = 0
      this.#bounds.forEach((le, i) => {
        cumulative += series.counts[i] as number
        values.push({ metricName: bucket, labels: { le, ...series.labels }, value: cumulative })
      })
      values.push({ metricName: bucket, labels: { le: '+Inf', ...series.labels }, value: series.count })
      values.push({ metricName: `${this.name}_sum`, labels: { ...series.labels }, value: series.sum })
      values.push({ metricName: `${this.name}_count`, labels: { ...series.labels }, value: series.count })
    }
    return { name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values }
  }

  reset(): void {
    for (const series of this.#series.values()) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}
