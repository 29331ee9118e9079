// Adds up vitest JSON reports into the one closing line CI reads: "tests: N passed, N failed".
// Each failed test is named above that line (report, file, test, first line of its message), so a
// CI log that shows only the tail still says what broke.
const { readFileSync } = require('node:fs')
const { relative } = require('node:path')
let passed = 0
let failed = 0
let skipped = 0
const failures = []
for (const file of process.argv.slice(2)) {
  try {
    const report = JSON.parse(readFileSync(file, 'utf8'))
    passed += report.numPassedTests
    failed += report.numFailedTests + (report.numRuntimeErrorTestSuites ?? 0)
    skipped += report.numPendingTests + report.numTodoTests
    for (const suite of report.testResults ?? []) {
      const where = relative(process.cwd(), suite.name ?? '?')
      const failedTests = (suite.assertionResults ?? []).filter((t) => t.status === 'failed')
      for (const test of failedTests) {
        failures.push(`${file}: ${where} > ${test.fullName}: ${firstLine(test.failureMessages)}`)
      }
      if (failedTests.length === 0 && suite.status === 'failed') {
        failures.push(`${file}: ${where}: ${firstLine([suite.message])}`)
      }
    }
  } catch {
    failed += 1
    console.log(`${file}: no readable report`)
  }
}
for (const line of failures) console.log(`FAILED ${line}`)
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)

function firstLine(messages) {
  const text = (messages ?? []).find((m) => m) ?? ''
  return text.split('\n')[0].slice(0, 300)
}
