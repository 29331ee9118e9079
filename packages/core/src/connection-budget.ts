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
  // By position (values()): an app's column transform (postgres.camel) would rename the columns.
  const [row] = await sql`
    select current_setting('max_connections')::int as max_connections,
      current_setting('superuser_reserved_connections')::int as superuser,
      coalesce(current_setting('reserved_connections', true), '0')::int as reserved,
      (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as in_use`.values()
  const [maxConnections = 0, superuser = 0, reservedSlots = 0, inUse = 0] = (row ?? []) as number[]
  const reserved = superuser + reservedSlots
  const available = maxConnections - reserved
  const demand = max * instances
  return Object.freeze({
    maxConnections,
    reserved,
    available,
    inUse,
    instances,
    demand,
    exceeded: demand > available,
  })
}
