// Adds up vitest JSON reports into the one closing line CI reads: "tests: N passed, N failed".
const { readFileSync } = require('node:fs')
let passed = 0
let failed = 0
let skipped = 0
for (const file of process.argv.slice(2)) {
  try {
    const report = JSON.parse(readFileSync(file, 'utf8'))
    passed += report.numPassedTests
    failed += report.numFailedTests + (report.numRuntimeErrorTestSuites ?? 0)
    skipped += report.numPendingTests + report.numTodoTests
  } catch {
    failed += 1
    console.log(`${file}: no readable report`)
  }
}
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
