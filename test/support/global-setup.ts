import type { TestProject } from 'vitest/node'
import { type EmbeddedServer, startEmbeddedServer } from './embedded-server.js'
import { type PgBouncer, startPgBouncer } from './pgbouncer.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the server every test file creates its own database on. */
    adminUrl: string
    /** 'embedded', or 'external' when DATABASE_URL was given. */
    serverKind: 'embedded' | 'external'
    /** Set when PGBOUNCER=1: port of a PgBouncer (transaction mode) in front of the server. */
    bouncerPort: number | undefined
  }
}

let server: EmbeddedServer | undefined
let bouncer: PgBouncer | undefined

export async function setup(project: TestProject): Promise<void> {
  const given = process.env.DATABASE_URL
  if (!given) server = await startEmbeddedServer()
  const adminUrl = given ?? (server as EmbeddedServer).url
  project.provide('adminUrl', adminUrl)
  project.provide('serverKind', given ? 'external' : 'embedded')
  if (process.env.PGBOUNCER === '1') bouncer = await startPgBouncer({ upstream: adminUrl })
  project.provide('bouncerPort', bouncer?.port)
}

export async function teardown(): Promise<void> {
  await bouncer?.stop()
  await server?.destroy()
}
