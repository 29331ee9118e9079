// A scraper sends its Accept header in another letter case (`Application/OpenMetrics-Text`, a
// `Q=0.2` parameter): media types and parameter names are case-insensitive (RFC 9110), so it
// should get the same format as in lower case. It got the Prometheus text (the check looked for
// 'openmetrics' in the header as sent), and an upper-case `Q` was not read as a weight.

import { negotiate } from '@fastify-pg-pool/metrics'
import { expect, test } from 'vitest'

test('the Accept header is read without regard to letter case', () => {
  expect(negotiate('Application/OpenMetrics-Text; version=1.0.0')).toBe('openmetrics')
  expect(negotiate('APPLICATION/OPENMETRICS-TEXT;version=1.0.0,text/plain;q=0.5')).toBe('openmetrics')
  expect(negotiate('application/openmetrics-text;Q=0.2,text/plain;q=0.9')).toBe('prometheus')
  expect(negotiate('Text/Plain;q=0.9,application/openmetrics-text;q=0.2')).toBe('prometheus')
})
