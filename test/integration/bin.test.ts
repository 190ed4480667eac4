// bin/deploy-agent.js picks what it runs: the build in dist/ when it is at least as new as every source in agent/,
// the TypeScript sources through tsx otherwise (or with DEPLOY_AGENT_FROM_SOURCE=1), and the build alone when the
// sources are not installed. Checked on a copy of the bin beside stand-in entry points that say which one ran.
import { execFile } from 'node:child_process'
import { copyFile, mkdir, rm, symlink, utimes, writeFile } from 'node:fs/promises'
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

  const ran = async (env: NodeJS.ProcessEnv = {}) => (await run(process.execPath, [join(root, 'bin', 'deploy-agent.js')], { env: { ...process.env, ...env } })).stdout.trim()
  t.equal(await ran(), 'dist', 'a build newer than every source runs')
  t.equal(await ran({ DEPLOY_AGENT_FROM_SOURCE: '1' }), 'sources', 'DEPLOY_AGENT_FROM_SOURCE=1 runs the sources')

  await utimes(join(root, 'agent', 'cli', 'other.ts'), at(20), at(20))
  t.equal(await ran(), 'sources', 'one source newer than the build: the sources run, not the stale build')

  await rm(join(root, 'agent'), { recursive: true })
  t.equal(await ran(), 'dist', 'installed without sources: the build runs')

  await rm(join(root, 'dist'), { recursive: true })
  await t.rejects(ran(), 'neither: the bin fails rather than run nothing')
})
