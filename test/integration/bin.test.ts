// bin/deploy-agent.js picks what it runs: the build in dist/ when it is at least as new as every source in agent/,
// the TypeScript sources through tsx otherwise (or with DEPLOY_AGENT_FROM_SOURCE=1), and the build alone when the
// sources are not installed. Checked on a copy of the bin beside stand-in entry points that say which one ran.
import { execFile } from 'node:child_process'
import { copyFile, mkdir, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'
import { BIN } from '../helpers/cli.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const NODE_MODULES = fileURLToPath(new URL('../../node_modules', import.meta.url))

t.test('bin: dist when fresh, sources when a source is newer or when asked, dist alone without sources', async (t) => {
  const root = await tempDir(t)
  await mkdir(join(root, 'bin'))
  await mkdir(join(root, 'dist', 'cli'), { recursive: true })
  await mkdir(join(root, 'agent', 'cli'), { recursive: true })
  await copyFile(BIN, join(root, 'bin', 'deploy-agent.js'))
  await symlink(NODE_MODULES, join(root, 'node_modules'))
  await writeFile(join(root, 'package.json'), '{ "type": "module" }\n')
  await writeFile(join(root, 'agent', 'cli', 'main.ts'), "const ran: string = 'sources'\nconsole.log(ran)\n")
  await writeFile(join(root, 'agent', 'cli', 'other.ts'), 'export {}\n')
  await writeFile(join(root, 'dist', 'cli', 'main.js'), "console.log('dist')\n")
  const at = (sec: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, sec))
  await utimes(join(root, 'agent', 'cli', 'main.ts'), at(0), at(0))
  await utimes(join(root, 'agent', 'cli', 'other.ts'), at(0), at(0))
  await utimes(join(root, 'dist', 'cli', 'main.js'), at(10), at(10))

  // TSX_DISABLE_CACHE as the test helpers pass it: tap's NODE_OPTIONS preloads a loader (see the next test).
  const ran = async (env: NodeJS.ProcessEnv = {}) =>
    (
      await run(process.execPath, [join(root, 'bin', 'deploy-agent.js')], { env: { ...process.env, TSX_DISABLE_CACHE: '1', ...env } })
    ).stdout.trim()
  t.equal(await ran(), 'dist', 'a build newer than every source runs')
  t.equal(await ran({ DEPLOY_AGENT_FROM_SOURCE: '1' }), 'sources', 'DEPLOY_AGENT_FROM_SOURCE=1 runs the sources')

  await utimes(join(root, 'agent', 'cli', 'other.ts'), at(20), at(20))
  t.equal(await ran(), 'sources', 'one source newer than the build: the sources run, not the stale build')

  await rm(join(root, 'agent'), { recursive: true })
  t.equal(await ran(), 'dist', 'installed without sources: the build runs')

  await rm(join(root, 'dist'), { recursive: true })
  await t.rejects(ran(), 'neither: the bin fails rather than run nothing')
})

// tsx caches compiled code under the temp dir without checking who owns it, so a local user who pre-creates the
// cache makes whoever runs the sources execute their code. A stand-in `tsx` package (the real one behind it)
// records whether it was loaded and with which TSX_DISABLE_CACHE.
t.test('bin: a dist run never loads tsx; a source run turns its disk cache off', async (t) => {
  const root = await tempDir(t)
  const tmp = join(root, 'tmp')
  const marker = join(root, 'tsx-loaded')
  await mkdir(join(root, 'bin'))
  await mkdir(join(root, 'dist', 'cli'), { recursive: true })
  await mkdir(join(root, 'agent', 'cli'), { recursive: true })
  await mkdir(join(root, 'node_modules', 'tsx', 'esm'), { recursive: true })
  await mkdir(tmp)
  await copyFile(BIN, join(root, 'bin', 'deploy-agent.js'))
  await writeFile(join(root, 'package.json'), '{ "type": "module" }\n')
  await writeFile(
    join(root, 'node_modules', 'tsx', 'package.json'),
    JSON.stringify({ name: 'tsx', type: 'module', exports: { './esm/api': './esm/api.mjs' } }),
  )
  await writeFile(
    join(root, 'node_modules', 'tsx', 'esm', 'api.mjs'),
    [
      "import { writeFileSync } from 'node:fs'",
      `writeFileSync(${JSON.stringify(marker)}, String(process.env.TSX_DISABLE_CACHE))`,
      `export * from ${JSON.stringify(join(NODE_MODULES, 'tsx', 'dist', 'esm', 'api', 'index.mjs'))}`,
    ].join('\n'),
  )
  await writeFile(join(root, 'agent', 'cli', 'main.ts'), "const ran: string = 'sources'\nconsole.log(ran)\n")
  await writeFile(join(root, 'dist', 'cli', 'main.js'), "console.log('dist')\n")
  const at = (sec: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, sec))
  await utimes(join(root, 'agent', 'cli', 'main.ts'), at(0), at(0))
  await utimes(join(root, 'dist', 'cli', 'main.js'), at(10), at(10))
  // As an operator runs it: tap puts a preloaded loader into every child's NODE_OPTIONS (the case checked last), so
  // `env` takes it out again.
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp }
  delete env.TSX_DISABLE_CACHE
  const ran = async (extra: NodeJS.ProcessEnv = {}) => {
    const unset = extra.NODE_OPTIONS ? [] : ['-u', 'NODE_OPTIONS']
    return (
      await run('env', [...unset, process.execPath, join(root, 'bin', 'deploy-agent.js')], { env: { ...env, ...extra } })
    ).stdout.trim()
  }

  t.equal(await ran(), 'dist')
  t.notOk(await readFile(marker, 'utf8').catch(() => null), 'the dist run did not load tsx')

  t.equal(await ran({ DEPLOY_AGENT_FROM_SOURCE: '1' }), 'sources')
  t.equal(await readFile(marker, 'utf8'), '1', 'tsx was loaded with TSX_DISABLE_CACHE=1')
  t.same(
    (await readdir(tmp)).filter((name) => name.startsWith('tsx')),
    [],
    'no tsx cache directory in the temp dir',
  )

  // A preloaded loader's hooks thread took its environment before the bin could set the variable.
  const preload = { NODE_OPTIONS: `--import=${join(root, 'dist', 'cli', 'main.js')}`, DEPLOY_AGENT_FROM_SOURCE: '1' }
  await t.rejects(ran(preload), { code: 2, stderr: /needs TSX_DISABLE_CACHE=1 in the environment/ }, 'refused beside a preloaded loader')
  t.equal(await ran({ ...preload, TSX_DISABLE_CACHE: '1' }), 'dist\nsources', 'runs when the variable comes from outside')
  t.same(
    (await readdir(tmp)).filter((name) => name.startsWith('tsx')),
    [],
    'still no tsx cache directory',
  )
})
