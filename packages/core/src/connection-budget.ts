import type postgres from 'postgres'

/** How this pool's demand compares with what the server allows, read at startup. */
export interface ConnectionBudget {
  /** The server's `max_connections`. */
  readonly maxConnections: number
  /** Slots only superusers or privileged roles may use (`superuser_reserved_connections` + `reserved_connections`). */
  readonly reserved: number
  /** `maxConnections - reserved`: what ordinary clients share. */
  readonly available: number
  /** Client backends connected when the budget was read (this pool's first connection included). */
  readonly inUse: number
  /** Expected instances of this app (`pool.instances`). */
  readonly instances: number
  /** `max × instances`: connections the app may open at full load. */
  readonly demand: number
  /** True when `demand > available`. */
  readonly exceeded: boolean
}

export async function readConnectionBudget(
  sql: postgres.ISql<{}>,
  max: number,
  instances: number,
): Promise<ConnectionBudget> {
  const [row] = await sql<{ max_connections: number; superuser: number; reserved: number; in_use: number }[]>`
    select current_setting('max_connections')::int as max_connections,
      current_setting('superuser_reserved_connections')::int as superuser,
      coalesce(current_setting('reserved_connections', true), '0')::int as reserved,
      (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as in_use`
  const maxConnections = row?.max_connections ?? 0
  const reserved = (row?.superuser ?? 0) + (row?.reserved ?? 0)
  const available = maxConnections - reserved
  const demand = max * instances
  return Object.freeze({
    maxConnections,
    reserved,
    available,
    inUse: row?.in_use ?? 0,
    instances,
    demand,
    exceeded: demand > available,
  })
}
