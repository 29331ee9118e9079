// Round sixteen (second observability probe). What the on-call engineer got: no page at all,
// while admission control refused 200 requests every three minutes for half an hour (4,000
// refusals, capacity short at every burst of traffic). This round PgPoolShedding took the
// refusal rate over 2m (with `for: 5m`) so that one refusal every four minutes would not page:
// but `> 0` over 2m drops to 0 between bursts three minutes apart, `for` starts over, and the
// critical alert never fires, whatever the number refused. (The same 2m window at a 1m scrape
// interval, Prometheus' default, holds two samples under Prometheus 3: one missed scrape, common
// under the very overload that sheds, starts `for` over too.) The rule now judges how many were
// refused (more than 3 in 5 minutes) rather than whether refusals never paused: the trickle of
// probe-observe/shedding-trickle.rules-test.yml stays quiet, these bursts page.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect, test } from 'vitest'
import { prometheusTool } from '../../../support/tools.js'

const promtool = prometheusTool('promtool', 'shedding bursts rule test')
const cases = fileURLToPath(new URL('shedding-bursts.rules-test.yml', import.meta.url))
const trickle = fileURLToPath(new URL('../probe-observe/shedding-trickle.rules-test.yml', import.meta.url))

// Skipped only without promtool outside CI: .ci/run sets REQUIRE_PROMETHEUS_TOOLS=1, which fails instead (test/support/tools.ts).
test.skipIf(promtool === undefined)('PgPoolShedding: bursts of refusals minutes apart page, a trickle does not', () => {
  const run = spawnSync(promtool as string, ['test', 'rules', cases, trickle], { encoding: 'utf8' })
  const output = `${run.stdout}${run.stderr}`
  expect(output).not.toContain('FAILED')
  expect(run.status).toBe(0)
})
