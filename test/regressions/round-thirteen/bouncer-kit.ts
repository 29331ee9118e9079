import { type PgBouncer, startPgBouncer } from '../../support/pgbouncer.js'

/** The round-thirteen PgBouncer tests' starter: test/support/pgbouncer.ts with `[pgbouncer]` settings of their own. */
export type Bouncer = PgBouncer

export function startBouncer(upstreamUrl: string, settings: Record<string, string | number>): Promise<Bouncer> {
  return startPgBouncer({ upstream: upstreamUrl, settings })
}
