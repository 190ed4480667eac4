// Confirms an nginx reload from outside: `nginx -s reload` returns before the master re-reads its config, and a
// config that fails to apply leaves the old workers running without a word. A reload has taken when the master has
// started workers that were not there before and the old workers have stopped accepting (they retitle themselves
// "worker process is shutting down", or are gone). Linux only: reads /proc.
import { readdir, readFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { ProxyError } from './errors.js'

const PROC = '/proc'

async function masterPid(pidFile: string): Promise<number> {
  let text: string
  try {
    text = await readFile(pidFile, 'utf8')
  } catch (err) {
    throw new ProxyError('proxy_not_running', `cannot read the nginx pid file ${pidFile}: ${(err as Error).message}`)
  }
  const pid = Number(text.trim())
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new ProxyError('proxy_not_running', `the nginx pid file ${pidFile} holds no pid`)
  }
  return pid
}

/**
 * What `nginx -s reload` does, from here: a SIGHUP to the master the pid file names — once /proc shows that pid is an
 * nginx master (a stale pid file may name a reused pid, and SIGHUP ends most processes).
 */
export async function signalReload(pidFile: string): Promise<void> {
  const pid = await masterPid(pidFile)
  const name = await title(pid)
  if (name === null || !/^nginx: master process/.test(name))
    throw new ProxyError(
      'proxy_not_running',
      `pid ${pid} in ${pidFile} is not an nginx master${name === null ? ' (no such process)' : ` but ${JSON.stringify(name)}`}`,
    )
  try {
    process.kill(pid, 'SIGHUP')
  } catch (err) {
    throw new ProxyError('proxy_reload_failed', `cannot signal the nginx master (pid ${pid} from ${pidFile}): ${(err as Error).message}`)
  }
}

interface ProcStat {
  pid: number
  ppid: number
  state: string
}

// `/proc/<pid>/stat` is `pid (comm) state ppid …`; comm may hold spaces and parentheses, so split after the last ')'.
function parseStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(')')
  if (close < 0) return null
  const [state, ppid] = text.slice(close + 2).split(' ')
  const pid = Number.parseInt(text, 10)
  if (state === undefined || ppid === undefined || !Number.isSafeInteger(pid)) return null
  return { pid, ppid: Number(ppid), state }
}

async function readStat(pid: number): Promise<ProcStat | null> {
  const text = await readFile(`${PROC}/${pid}/stat`, 'utf8').catch(() => null)
  return text === null ? null : parseStat(text)
}

// The kernel's children lists (CONFIG_PROC_CHILDREN) when present, else a scan of every process's parent.
async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readdir(`${PROC}/${pid}/task`).catch(() => null)
  if (tasks === null) throw new ProxyError('proxy_not_running', `the nginx master (pid ${pid}) is not running`)
  const fromKernel: number[] = []
  for (const task of tasks) {
    const text = await readFile(`${PROC}/${pid}/task/${task}/children`, 'utf8').catch(() => null)
    if (text === null) return await scanChildren(pid)
    for (const word of text.split(/\s+/)) if (word !== '') fromKernel.push(Number(word))
  }
  return fromKernel
}

async function scanChildren(pid: number): Promise<number[]> {
  const entries = await readdir(PROC)
  const stats = await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map((e) => readStat(Number(e))))
  return stats.filter((s): s is ProcStat => s !== null && s.ppid === pid).map((s) => s.pid)
}

/** The live (non-zombie) child processes of the nginx master named by `pidFile`: its workers and helpers. */
export async function workerPids(pidFile: string): Promise<Set<number>> {
  const master = await masterPid(pidFile)
  const children = await childrenOf(master)
  const live = new Set<number>()
  for (const pid of children) {
    const stat = await readStat(pid)
    if (stat !== null && stat.ppid === master && stat.state !== 'Z') live.add(pid)
  }
  return live
}

async function title(pid: number): Promise<string | null> {
  const raw = await readFile(`${PROC}/${pid}/cmdline`, 'utf8').catch(() => null)
  return raw === null ? null : raw.replace(/\0+$/, '').replace(/\0/g, ' ')
}

// An old worker still takes new connections until it has been told to quit: right after starting the new workers
// the master sleeps ~100 ms before signalling the old ones.
async function stillAccepting(pid: number, current: Set<number>): Promise<boolean> {
  if (!current.has(pid)) return false
  const name = await title(pid)
  return name !== null && name.includes('worker process') && !name.includes('shutting down')
}

export interface WaitForWorkersOptions {
  /** How often to look, in ms (default 20). */
  intervalMs?: number
}

/**
 * Resolves with the new worker pids once the master (read from `pidFile` at every look) has children that are not
 * in `before` and none of the workers in `before` still accepts connections. Throws ProxyError
 * `proxy_reload_unconfirmed` after `timeoutMs`, or `proxy_not_running` when the master is gone.
 */
export async function waitForNewWorkers(
  pidFile: string,
  before: Set<number>,
  timeoutMs: number,
  options: WaitForWorkersOptions = {},
): Promise<number[]> {
  const intervalMs = options.intervalMs ?? 20
  const deadline = Date.now() + timeoutMs
  let seen: number[]
  for (;;) {
    const current = await workerPids(pidFile)
    seen = [...current].filter((pid) => !before.has(pid))
    if (seen.length > 0) {
      const accepting = await Promise.all([...before].map((pid) => stillAccepting(pid, current)))
      if (!accepting.includes(true)) return seen
    }
    if (Date.now() >= deadline) break
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())))
  }
  const why =
    seen.length === 0 ? 'no new worker process appeared' : `new workers ${seen.join(', ')} started but the old ones were not told to quit`
  // The usual cause is a reload that never reached nginx: the command did nothing, or the systemd helper is stuck.
  throw new ProxyError(
    'proxy_reload_unconfirmed',
    `nginx reload not confirmed within ${timeoutMs} ms: ${why}; check that proxy.reload reloads this nginx and that ` +
      `proxy.pidFile is its master's pid file (with the systemd reload helper: \`systemctl status ` +
      `deploy-agent-nginx-reload.path deploy-agent-nginx-reload.service\`, and after a failure \`systemctl reset-failed ` +
      `deploy-agent-nginx-reload.path deploy-agent-nginx-reload.service\` then \`systemctl start deploy-agent-nginx-reload.path\`)`,
  )
}
