import { afterAll, afterEach, beforeAll } from 'vitest'
import { type NotesCluster, startNotesCluster } from './replication.js'

/**
 * The lifecycle the replica test files share: a primary and a standby with a replayed `notes`
 * table for the whole file (`startNotesCluster(name)`), the standby replaying and running again
 * after each test (a test may pause its replay or stop it), everything removed after the file.
 * Read the cluster through the returned handle inside hooks and tests: it is there once the
 * file's `beforeAll` hooks ran.
 */
export function useNotesCluster(name: string): NotesCluster {
  let notes: NotesCluster | undefined
  beforeAll(async () => {
    notes = await startNotesCluster(name)
  }, 120_000)
  afterEach(async () => {
    if (notes === undefined) return
    const { cluster } = notes
    await cluster.resumeReplay(cluster.standby).catch(() => {})
    if (!cluster.standby.running) await cluster.standby.start()
  })
  afterAll(async () => {
    await notes?.destroy()
  })
  const started = (): NotesCluster => {
    if (notes === undefined) throw new Error(`the ${name} cluster is not started (use it inside hooks and tests)`)
    return notes
  }
  return {
    get cluster() {
      return started().cluster
    },
    get database() {
      return started().database
    },
    get primarySql() {
      return started().primarySql
    },
    destroy: () => started().destroy(),
  }
}
