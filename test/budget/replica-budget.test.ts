import pgPoolCore from '@fastify-pg-pool/core'
import pgPoolHealth from '@fastify-pg-pool/health'
import Fastify from 'fastify'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'

// Hostile probing, round 2 (connection budget), held: a replica (a standby sharing the primary's
// system identifier) is not summed with the primary; a named instance with a replica on the same
// standby is summed with that replica only.

let notes: NotesCluster
beforeAll(async () => {
  notes = await startNotesCluster('probe_r2_budget')
}, 120_000)
afterAll(async () => {
  await notes?.destroy()
})

describe('budgets with replicas', () => {
  test('primary and replica are budgeted apart; two pools on one standby are summed', async () => {
    const app = Fastify()
    try {
      await app.register(pgPoolCore, {
        connection: notes.database.primaryUrl,
        replicas: [notes.database.standbyUrls[0] as string],
        pool: { max: 3 },
      })
      await app.register(pgPoolCore, {
        name: 'reports',
        connection: notes.database.primaryUrl,
        replicas: [notes.database.standbyUrls[0] as string],
        pool: { max: 5 },
      })
      await app.register(pgPoolHealth)
      await app.ready()
      const budgets = Object.fromEntries(
        app.pgPools.all().map((view) => {
          const budget = view.budget()
          return [view.name, { serverDemand: budget?.serverDemand, pools: [...(budget?.pools ?? [])].sort() }]
        }),
      )
      const names = app.pgPools.all().map((view) => view.name)
      const [primary, replica, reports, reportsReplica] = names as [string, string, string, string]
      expect(budgets[primary]).toEqual({ serverDemand: 8, pools: [primary, reports].sort() })
      expect(budgets[reports]).toEqual({ serverDemand: 8, pools: [primary, reports].sort() })
      expect(budgets[replica]).toEqual({ serverDemand: 8, pools: [replica, reportsReplica].sort() })
      const checks = (await app.inject('/health')).json().checks['postgres:budget'] as { observedValue: number }[]
      expect(checks.map((check) => check.observedValue)).toEqual([8, 8, 8, 8])
    } finally {
      await app.close()
    }
  })
})
