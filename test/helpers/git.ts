import { execFile } from 'node:child_process'
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface CommitStep {
  files: Record<string, string>
  tag?: string
  annotated?: boolean
  message?: string
}

export interface GitRepo {
  path: string
  /** The commit sha made by each step, in order. */
  commits: string[]
  /** Tag name → the sha of the commit it points at (not the tag object). */
  tags: Record<string, string>
}

// Keeps the tests independent of the machine's global/system git config (signing, hooks, default branch).
const gitEnv = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_TERMINAL_PROMPT: '0',
}

async function git(cwd: string, args: string[]): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: gitEnv })
  return stdout.trim()
}

/** Creates a real git repository at `dir` (branch main), one commit per step, tagging where asked. */
export async function makeGitRepo(dir: string, steps: CommitStep[]): Promise<GitRepo> {
  await mkdir(dir, { recursive: true })
  await git(dir, ['init', '--quiet', '--initial-branch=main'])
  await git(dir, ['config', 'user.name', 'deploy-agent tests'])
  await git(dir, ['config', 'user.email', 'tests@deploy-agent.invalid'])
  await git(dir, ['config', 'commit.gpgsign', 'false'])
  await git(dir, ['config', 'tag.gpgsign', 'false'])

  const repo: GitRepo = { path: dir, commits: [], tags: {} }
  for (const [i, step] of steps.entries()) {
    for (const [name, content] of Object.entries(step.files)) {
      const file = join(dir, name)
      await mkdir(dirname(file), { recursive: true })
      await writeFile(file, content)
    }
    await git(dir, ['add', '--all'])
    await git(dir, ['commit', '--quiet', '--allow-empty', '-m', step.message ?? `step ${i + 1}`])
    const sha = await git(dir, ['rev-parse', 'HEAD'])
    repo.commits.push(sha)
    if (step.tag !== undefined) {
      const tagArgs = step.annotated === true ? ['-a', '-m', `release ${step.tag}`] : []
      await git(dir, ['tag', ...tagArgs, '--', step.tag])
      repo.tags[step.tag] = sha
    }
  }
  return repo
}
