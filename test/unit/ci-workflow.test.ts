// The GitHub workflow, the CI script and the CLI must not drift apart: the workflow's deploy steps run
// scripts/ci-deploy.sh with every variable the script requires, on the documented triggers, and the script uses
// only flags and environment variables the CLI really has.
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { buildProgram } from '../../agent/cli/program.js'

const root = resolve(import.meta.dirname, '../..')
const workflowText = await readFile(resolve(root, '.github/workflows/deploy.yml'), 'utf8')
const scriptText = await readFile(resolve(root, 'scripts/ci-deploy.sh'), 'utf8')

interface Step {
  name?: string
  uses?: string
  run?: string
  env?: Record<string, string>
}
interface Job {
  needs?: string | string[]
  if?: string
  steps: Step[]
}
interface Workflow {
  on: { push: { branches: string[]; tags: string[] } }
  jobs: Record<string, Job>
}

const workflow = parse(workflowText) as Workflow

/** The script's required inputs: each `[ -n "${A:-}${B:-}" ] || missing+=` line is one input, given by any of its names. */
function requiredByScript(): string[][] {
  return scriptText
    .split('\n')
    .filter((line) => line.startsWith('[ -n "${DEPLOY_AGENT_'))
    .map((line) => [...line.matchAll(/\$\{(DEPLOY_AGENT_[A-Z_]+):-\}/g)].map((m) => m[1] as string))
}

t.test('CI workflow: triggers', async (t) => {
  t.same(workflow.on.push.branches, ['main'], 'pushes to main')
  t.same(workflow.on.push.tags, ['v*.*.*'], 'tags vX.Y.Z')
  t.same(Object.keys(workflow.jobs).sort(), ['deploy-production', 'deploy-staging', 'test'])
  t.equal(workflow.jobs['deploy-staging']?.needs, 'test')
  t.equal(workflow.jobs['deploy-production']?.needs, 'test')
  t.match(workflow.jobs['deploy-staging']?.if, /github\.ref == 'refs\/heads\/main'/)
  t.match(workflow.jobs['deploy-production']?.if, /startsWith\(github\.ref, 'refs\/tags\/v'\)/)
  t.match(workflow.jobs.test?.steps.map((s) => s.run).filter(Boolean), ['npm ci', 'npm test'])
})

t.test('CI workflow: each deploy job runs scripts/ci-deploy.sh with every variable it requires', async (t) => {
  const required = requiredByScript()
  t.same(required, [
    ['DEPLOY_AGENT_URL'],
    ['DEPLOY_AGENT_KEY_ID'],
    ['DEPLOY_AGENT_KEY', 'DEPLOY_AGENT_KEY_FILE'],
    ['DEPLOY_AGENT_STATUS_TOKEN', 'DEPLOY_AGENT_STATUS_TOKEN_FILE'],
  ])
  for (const [job, env] of [
    ['deploy-staging', 'staging'],
    ['deploy-production', 'production'],
  ] as const) {
    const steps = workflow.jobs[job]?.steps ?? []
    const deploys = steps.filter((s) => s.run?.includes('scripts/ci-deploy.sh'))
    t.equal(deploys.length, 1, `${job}: one step runs the script`)
    const step = deploys[0] as Step
    t.equal(step.run, `bash .deploy-agent/scripts/ci-deploy.sh "$APP" ${env} "$GITHUB_REF_NAME"`, `${job}: app, ${env}, the pushed ref`)
    t.notOk(
      steps.some((s) => /deploy-agent(\.js)? deploy\b/.test(s.run ?? '')),
      `${job}: no step calls the CLI's deploy itself`,
    )
    for (const names of required) {
      const given = names.filter((name) => step.env?.[name] === `\${{ secrets.${name} }}`)
      t.equal(given.length, 1, `${job}: ${names.join(' or ')} comes from the secret of that name`)
      for (const name of given) t.match(workflowText, new RegExp(`^# {3}${name} `, 'm'), `${name} is documented in the header`)
    }
    t.equal(step.env?.DEPLOY_COMMIT, '${{ github.sha }}', `${job}: the pushed commit is pinned`)
  }
})

t.test('CI script: uses only flags and variables the CLI has', async (t) => {
  const deploy = buildProgram().commands.find((c) => c.name() === 'deploy')
  if (!deploy) throw new Error('no deploy command')
  const flags = new Set(deploy.options.map((o) => o.long))
  const envVars = new Set(deploy.options.map((o) => o.envVar).filter(Boolean))
  const used = [...scriptText.matchAll(/args(?:\+)?=\(([^)]*)\)/g)].flatMap((m) =>
    [...(m[1] ?? '').matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((f) => f[0]),
  )
  t.same([...new Set(used)].sort(), ['--commit', '--follow', '--reason'])
  for (const flag of used) t.ok(flags.has(flag), `deploy has ${flag}`)
  for (const name of requiredByScript().flat()) {
    if (name === 'DEPLOY_AGENT_KEY' || name === 'DEPLOY_AGENT_STATUS_TOKEN') continue // read by the script / by clientFrom
    t.ok(envVars.has(name), `the CLI reads ${name}`)
  }
  t.match(scriptText, /^set -euo pipefail$/m)
})
