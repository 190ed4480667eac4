// A deploy's git work is background work: every git the mirror starts (fetch, tag lookups, archive) runs niced, so
// on a busy host the live release keeps the CPU. Real git through a PATH wrapper that records each run's niceness.
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { getPriority } from 'node:os'
import t from 'tap'
import { GitMirror } from '../../agent/git/mirror.js'
import { makeGitRepo } from '../helpers/git.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)

t.test('GitMirror: fetch, tag lookups and archive run git at a lower CPU priority than the agent', async (t) => {
  const dir = await tempDir(t)
  const upstream = await makeGitRepo(join(dir, 'work'), [{ files: { Dockerfile: 'FROM scratch\n' }, tag: 'v1.0.0' }])
  const bin = join(dir, 'bin')
  await mkdir(bin)
  const log = join(dir, 'nice.log')
  const { stdout } = await run('sh', ['-c', 'command -v git'])
  // Field 19 of /proc/<pid>/stat is the niceness; `$$` is this shell, which then becomes git.
  await writeFile(join(bin, 'git'), `#!/bin/sh\ncut -d' ' -f19 /proc/$$/stat >> '${log}'\nexec '${stdout.trim()}' "$@"\n`, { mode: 0o755 })
  const path = process.env.PATH
  process.env.PATH = `${bin}:${path}`
  t.teardown(() => {
    process.env.PATH = path
  })

  const mirror = new GitMirror({ url: upstream.path, dir: join(dir, 'state', 'app.git'), timeoutMs: 30_000 })
  await mirror.fetch()
  const { commit } = await mirror.resolveTag('v1.0.0')
  const tar = mirror.archive(commit)
  for await (const chunk of tar) void chunk

  const levels = (await readFile(log, 'utf8'))
    .split('\n')
    .filter((l) => l !== '')
    .map(Number)
  t.ok(levels.length >= 3, `every run recorded (${levels.length})`)
  const own = getPriority()
  t.same([...new Set(levels)], [Math.min(own + 10, 19)], 'each git ran at the agent’s niceness + 10')
})
