import type { ConnectionBudget, ServerSlots } from './connection-budget.js'

interface Entry {
  readonly pool: string
  readonly demand: number
}

/**
 * The connection budgets of one app's pools, by server: pools of several instances on one server
 * (two databases of one cluster) share its `max_connections`, so each pool's budget counts them
 * all. Shared by every registration of the core on one app.
 */
export class ServerBudgets {
  readonly #byServer = new Map<string, Entry[]>()

  /**
   * Counts `pool`'s `max × instances` on its server; returns its budget, read afresh on each call
   * (a pool registered later on the same server counts in the budget of one registered before).
   */
  join(slots: ServerSlots, pool: string, max: number, instances: number): () => ConnectionBudget {
    let entries = this.#byServer.get(slots.server)
    if (entries === undefined) {
      entries = []
      this.#byServer.set(slots.server, entries)
    }
    entries.push({ pool, demand: max * instances })
    const shared = entries
    let last: ConnectionBudget | undefined
    let counted = -1
    return () => {
      if (last !== undefined && counted === shared.length) return last
      const serverDemand = shared.reduce((sum, entry) => sum + entry.demand, 0)
      const pools = [pool, ...shared.filter((entry) => entry.pool !== pool).map((entry) => entry.pool)]
      last = Object.freeze({
        maxConnections: slots.maxConnections,
        reserved: slots.reserved,
        available: slots.available,
        inUse: slots.inUse,
        max,
        instances,
        demand: max * instances,
        serverDemand,
        pools: Object.freeze(pools),
        exceeded: serverDemand > slots.available,
      })
      counted = shared.length
      return last
    }
  }
}
