// The numbers taken from the rounds of a run.

export function percentile(values, p) {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

/**
 * Median of each numeric field over rounds (the mean of the middle two for an even count): on a
 * shared machine one disturbed round would otherwise move a ratio by tens of percent.
 */
export function medianOf(runs) {
  const out = { ...runs[0], rounds: runs }
  for (const key of Object.keys(runs[0])) {
    if (typeof runs[0][key] !== 'number') continue
    const values = runs
      .map((r) => r[key])
      .filter((v) => Number.isFinite(v))
      .sort((a, b) => a - b)
    const mid = values.length / 2
    out[key] = values.length
      ? values.length % 2
        ? values[Math.floor(mid)]
        : (values[mid - 1] + values[mid]) / 2
      : Number.NaN
  }
  // Worst cases stay worst cases.
  for (const key of ['waitersMax', 'liveMax', 'metricsMax', 'lagP99']) {
    if (key in runs[0]) out[key] = Math.max(...runs.map((r) => r[key] ?? Number.NaN).filter(Number.isFinite))
  }
  return out
}

/**
 * The median over rounds of a's value divided by b's in the same round. The two ran seconds
 * apart, so the machine speeding up or slowing down between rounds (it does, by tens of percent)
 * moves the ratio less than it moves a ratio of two separate medians.
 */
export function pairedRatio(a, b, key = 'okPerS') {
  return medianOf(roundRatios(a, b, key).map((ratio) => ({ ratio }))).ratio
}

/** Each round's a / b, from variants measured one after the other in that round. */
export function roundRatios(a, b, key = 'okPerS') {
  return a.rounds.map((run, i) => run[key] / b.rounds[i][key])
}

/** The sum of a's `keys` over all its rounds (a count that a median would hide). */
export function totalOver(a, ...keys) {
  return (a.rounds ?? [a]).reduce((n, run) => n + keys.reduce((m, key) => m + (run[key] ?? 0), 0), 0)
}
