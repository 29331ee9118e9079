// An operator reads /health/ready while a replica gets no reads although its last sample was
// within maxLag (the sample is no longer recent: the lag monitor has not reached the replica
// lately; or its pool refuses new leases). The warn said "replica lagging: 0 s, 0 bytes behind",
// which sends them looking at replication, not at the monitor or the pool.
import { expect, test } from 'vitest'
import { replicationLagCheck } from '../../../../packages/health/src/health-report.js'

const maxLag = { seconds: 5, bytes: 16_000_000 }
const lag = { bytes: 0, seconds: 0, replayLsn: '0/1', at: 0, error: undefined }

test('a replica unusable within maxLag is not said to be lagging', () => {
  const check = replicationLagCheck({ usable: false, lag, maxLag } as never, lag, 't', 'replica-0')
  expect(check.status).toBe('warn')
  expect(check.output).not.toMatch(/lagging/)
  expect(check.output).toMatch(/not recent|refuses/)
})

test('one past maxLag is still said to be lagging, with its numbers', () => {
  const behind = { ...lag, seconds: 12, bytes: 300 }
  const check = replicationLagCheck({ usable: false, lag: behind, maxLag } as never, behind, 't', 'replica-0')
  expect(check.output).toBe('replica lagging: 12 s, 300 bytes behind (maxLag 5 s, 16000000 bytes): reads go elsewhere')
})
