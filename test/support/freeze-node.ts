import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { basename } from 'node:path'
import type { ReplicationCluster, ReplicationNode } from '../support/replication.js'

/** Pids of processes whose command line contains `text` (`pgrep -f`, or /proc where there is no pgrep). */
export function processesMatching(text: string): number[] {
  const pgrep = spawnSync('pgrep', ['-f', text], { encoding: 'utf8' })
  if (!pgrep.error) return pgrep.stdout.split('\n').filter(Boolean).map(Number)
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry) && Number(entry) !== process.pid)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(text)
      } catch {
        return false
      }
    })
    .map(Number)
}

/**
 * Every process of a node (postmaster and its children: backends, startup, walreceiver): the
 * children carry `<tag>-<name>` in their title (cluster_name), the postmaster its data dir.
 */
export function nodeProcesses(cluster: ReplicationCluster, node: ReplicationNode): number[] {
  const tag = basename(cluster.rootDir)
  const pids = new Set<number>([...processesMatching(`${tag}-${node.name}`), ...processesMatching(node.dataDir)])
  if (node.pid !== undefined) pids.add(node.pid)
  pids.delete(process.pid)
  return [...pids]
}

/** SIGSTOP every process of a node; returns a function that SIGCONTs them. */
export function freeze(cluster: ReplicationCluster, node: ReplicationNode): () => void {
  const pids = nodeProcesses(cluster, node)
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGSTOP')
    } catch {}
  }
  let thawed = false
  return () => {
    if (thawed) return
    thawed = true
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT')
      } catch {}
    }
  }
}
