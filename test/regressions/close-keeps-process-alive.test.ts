import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { waitFor, waitUntil } from '../support/database.js'
import { type NotesCluster, startNotesCluster } from '../support/replication.js'
import { startTcpProxy } from '../support/tcp-proxy.js'

// Found by hostile probing (failed before the fix; same cause as close-during-sample): a process whose app.close()
// lands during a lag sample does not exit: the monitor connection re-opened after close keeps
// the event loop alive.
//
// Expected: after `await app.close()` nothing of the plugin keeps the process alive (the pool's
// timers are unref'd, clock.ts: "never keeps the process alive"), so a server that closes on
// SIGTERM exits.
//
// What happened before the fix: see close-during-sample.test.ts (lsn-source.ts:30 re-creates the client after
// ServerLsnSource.end()); its socket is never ended, and the child below is still running 5 s
// after it printed 'closed'.

let notes: NotesCluster

beforeAll(async () => {
  notes = await startNotesCluster('probe_close_child')
}, 120_000)

afterAll(async () => {
  await notes?.destroy()
})

async function closeChild(holdSample: boolean): Promise<boolean> {
  const proxy = await startTcpProxy(notes.cluster.primary.port)
  const child = spawn(
    process.execPath,
    [
      fileURLToPath(new URL('./close-child.mjs', import.meta.url)),
      proxy.urlFor(notes.database.primaryUrl),
      notes.database.standbyUrls[0] as string,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'], cwd: fileURLToPath(new URL('../..', import.meta.url)) },
  )
  let out = ''
  child.stdout.on('data', (chunk) => {
    out += String(chunk)
  })
  let exited = false
  child.once('exit', () => {
    exited = true
  })
  try {
    await waitUntil(() => out.includes('ready'), 'the child to be ready', 30_000)
    if (holdSample) {
      let held = false
      // A sample's statement, or (when the one in flight was sent before the blackhole and has
      // timed out) the opening of the monitor's next connection: either way the monitor waits on
      // the primary, which is the state under test.
      proxy.onClientData = () => {
        held = true
      }
      proxy.setMode('blackhole')
      await waitUntil(() => held, 'the monitor to wait on the primary', 10_000)
    }
    child.stdin.write('close\n')
    await waitUntil(() => out.includes('closed'), 'the child to close', 10_000)
    // The proxy's sockets are the parent's: cut them so that only the child's own handles count.
    proxy.cutAll()
    await waitFor(() => exited, 5_000, 50)
    return exited
  } finally {
    if (!exited) child.kill('SIGKILL')
    await proxy.close()
  }
}

describe('a process closing during a lag sample', () => {
  test('control: closing between samples, the process exits', async () => {
    expect(await closeChild(false)).toBe(true)
  }, 60_000)

  test('exits after app.close()', async () => {
    expect(await closeChild(true), 'the child process is still alive 5 s after app.close() resolved').toBe(true)
  }, 60_000)
})
