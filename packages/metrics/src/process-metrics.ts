import { collectDefaultMetrics, type Metric, Registry } from 'prom-client'

/**
 * The Node process metrics (process_*, nodejs_*), collected once per process: prom-client's
 * collectDefaultMetrics starts a GC observer and an event-loop delay monitor that nothing can stop,
 * so one per app would outlive every app closed (a test suite, a dev server's reloads). They are
 * the process's anyway: every app that asks for them serves the same metrics.
 */
let processMetrics: readonly ProcessMetric[] | undefined

/** A process metric and its name (prom-client's Metric type does not show it). */
export interface ProcessMetric {
  readonly name: string
  readonly metric: Metric
}

export function defaultProcessMetrics(): readonly ProcessMetric[] {
  if (processMetrics !== undefined) return processMetrics
  const own = new Registry()
  collectDefaultMetrics({ register: own })
  const metrics = own.getMetricsAsArray().flatMap(({ name }) => {
    const metric = own.getSingleMetric(name)
    return metric === undefined ? [] : [{ name, metric }]
  })
  processMetrics = metrics
  return metrics
}
