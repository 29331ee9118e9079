// Round sixteen (observability probe). What the on-call engineer got: a critical page,
// PgPoolShedding ("admission control has been refusing requests for five minutes: capacity is
// short", examples/observability/prometheus-rules.yml), for one refused request every four
// minutes: "3.333m requests per second refused". The rule's rate over 5m stays above 0 for five
// minutes after a single refusal, so any trickle of refusals closer than five minutes apart (a
// low-priority request refused at a burst now and then) kept it firing. The cases in
// shedding-trickle.rules-test.yml: that trickle stays quiet, refusals every minute for five
// minutes still fire.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect, test } from 'vitest'
import { prometheusTool } from '../../../support/tools.js'

const promtool = prometheusTool('promtool', 'shedding trickle rule test')
const cases = fileURLToPath(new URL('shedding-trickle.rules-test.yml', import.meta.url))

// Skipped only without promtool outside CI: .ci/run sets REQUIRE_PROMETHEUS_TOOLS=1, which fails instead (test/support/tools.ts).
test.skipIf(promtool === undefined)('PgPoolShedding: a trickle of refusals does not page, steady shedding does', () => {
  const run = spawnSync(promtool as string, ['test', 'rules', cases], { encoding: 'utf8' })
  const output = `${run.stdout}${run.stderr}`
  expect(output).not.toContain('FAILED')
  expect(run.status).toBe(0)
})
