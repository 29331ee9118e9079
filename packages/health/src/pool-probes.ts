import type { PgPoolRegistry, PgPoolView } from '@fastify-pg-pool/core'
import type { PoolReading } from './health-report.js'
import type { ResolvedHealthOptions } from './options.js'
import { PingCache } from './ping-cache.js'

interface PoolProbe {
  readonly view: PgPoolView
  readonly pings: PingCache
}

/**
 * Every pool of the app (`app.pgPools`), those registered after this plugin included, each with
 * a ping cache of its own: one ping per pool per cache window, whatever the number of probes.
 */
export class PoolProbes {
  readonly #probes: PoolProbe[] = []
  readonly #options: ResolvedHealthOptions
  readonly #unsubscribe: () => void

  constructor(registry: PgPoolRegistry, options: ResolvedHealthOptions) {
    this.#options = options
    for (const view of registry.all()) this.#add(view)
    this.#unsubscribe = registry.onAdd((view) => this.#add(view))
  }

  /** Reads every pool; pings them (in parallel, through their caches) unless `ping` is false. */
  async read(ping: boolean): Promise<PoolReading[]> {
    const probes = [...this.#probes]
    const pings = ping ? await Promise.all(probes.map((probe) => probe.pings.get())) : []
    return probes.map(({ view, pings: cache }, i) => ({
      name: view.name,
      required: this.#required(view),
      stats: view.stats(),
      budget: view.budget(),
      listener: view.listener(),
      replica: view.replica(),
      ping: pings[i],
      everPassed: cache.everPassed,
    }))
  }

  close(): void {
    this.#unsubscribe()
  }

  #add(view: PgPoolView): void {
    if (this.#probes.some((probe) => probe.view === view)) return
    const { pingTimeout, cacheTime } = this.#options
    // view.ping is looked up per call so a wrapper installed on the view (tests, tracing) sees every ping.
    this.#probes.push({ view, pings: new PingCache((timeoutMs) => view.ping(timeoutMs), pingTimeout, cacheTime) })
  }

  /**
   * Readiness fails with the default instance's primary, and those of `requireInstances`. In an
   * app without a default instance and without `requireInstances`, with every instance's
   * primary: none of them is a secondary database then, and readiness would depend on none.
   */
  #required(view: PgPoolView): boolean {
    if (view.role !== 'primary') return false
    const { requireInstances } = this.#options
    if (view.instance === undefined || requireInstances.includes(view.instance)) return true
    return requireInstances.length === 0 && !this.#probes.some((probe) => probe.view.instance === undefined)
  }
}
