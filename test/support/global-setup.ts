import type { TestProject } from 'vitest/node'
import { type EmbeddedServer, startEmbeddedServer } from './embedded-server.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the server every test file creates its own database on. */
    adminUrl: string
    /** 'embedded', or 'external' when DATABASE_URL was given. */
    serverKind: 'embedded' | 'external'
  }
}

let server: EmbeddedServer | undefined

export async function setup(project: TestProject): Promise<void> {
  const given = process.env.DATABASE_URL
  if (given) {
    project.provide('adminUrl', given)
    project.provide('serverKind', 'external')
    return
  }
  server = await startEmbeddedServer()
  project.provide('adminUrl', server.url)
  project.provide('serverKind', 'embedded')
}

export async function teardown(): Promise<void> {
  await server?.destroy()
}
