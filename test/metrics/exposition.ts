/** A small parser of the Prometheus / OpenMetrics text formats, for assertions on scrapes. */

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Exposition {
  readonly samples: readonly Sample[]
  /** Metric family name → type, from the `# TYPE` lines. */
  readonly types: ReadonlyMap<string, string>
  /** The value of the one sample with this name whose labels include `labels`; throws otherwise. */
  value(name: string, labels?: Record<string, string>): number
  /** Samples with this name whose labels include `labels`. */
  find(name: string, labels?: Record<string, string>): Sample[]
}

const sampleLine = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
const labelPair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

function parseValue(text: string): number {
  if (text === '+Inf') return Number.POSITIVE_INFINITY
  if (text === '-Inf') return Number.NEGATIVE_INFINITY
  if (text === 'NaN' || text === 'Nan') return Number.NaN
  const value = Number(text)
  if (Number.isNaN(value)) throw new Error(`not a sample value: ${text}`)
  return value
}

export function parseExposition(text: string): Exposition {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '' || line === '# EOF') continue
    if (line.startsWith('#')) {
      const type = /^# TYPE (\S+) (\S+)$/.exec(line)
      if (type?.[1] && type[2]) types.set(type[1], type[2])
      continue
    }
    const match = sampleLine.exec(line)
    if (!match?.[1] || match[3] === undefined) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const pair of (match[2] ?? '').matchAll(labelPair)) {
      labels[pair[1] as string] = (pair[2] as string).replace(/\\n/g, '\n').replace(/\\(.)/g, '$1')
    }
    samples.push({ name: match[1], labels, value: parseValue(match[3]) })
  }
  const find = (name: string, labels: Record<string, string> = {}) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return {
    samples,
    types,
    find,
    value(name, labels = {}) {
      const found = find(name, labels)
      if (found.length !== 1) {
        throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}, expected exactly one`)
      }
      return (found[0] as Sample).value
    },
  }
}
