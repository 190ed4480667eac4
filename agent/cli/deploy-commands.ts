// The deploy commands: deploy, rollback, approve, logs, deploys, releases. Each parses its flags, calls the agent
// and prints; following a deploy to its end lives in follow.ts, the log's human form in log-format.ts.
import type { Command } from 'commander'
import type { AgentClient } from './client.js'
import { awaitingApprovalLine, deployPath, followDeploy, type DeployView } from './follow.js'
import { clock, formatEvent, painter, printable } from './log-format.js'
import { clientFrom, example, UsageError, withClientOptions, type ClientFlags } from './options.js'
import { formatTable } from './table.js'

interface Started {
  id: string
  state: string
  release?: string
  /** The state that means it worked (a rollback that ended a deploy's observe window: ROLLED_BACK). */
  endsAs?: string
}

interface ReleasesBody {
  releases: Array<{
    release: string
    commit: string
    image: string
    createdAt: string
    live: boolean
    outcome: 'live' | 'served' | 'failed' | 'rolled_back' | null
    deployId: string | null
    /** A swarm env: null when no colour holds the release, [] when its colour is kept scaled to 0. */
    tasks?: Array<{ service: string; node: string; addr: string; state: string }> | null
  }>
  keepReleases: number
}

const envPath = (app: string, env: string) => `/v1/apps/${encodeURIComponent(app)}/envs/${encodeURIComponent(env)}`

/** `2024-05-01T12:00:01.123Z` → `2024-05-01 12:00:01Z`: one column width, still UTC and unambiguous. */
const shortTime = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')

/** A swarm env's tasks of each release that has a colour: a table per release, or why it has none. */
function releaseTasks(releases: ReleasesBody['releases']): string[] {
  return releases.flatMap((r) => {
    if (!r.tasks) return []
    if (r.tasks.length === 0) return [`${r.release}: no task (its colour is kept, scaled to 0)`]
    const rows = [
      ['SERVICE', 'NODE', 'ADDRESS', 'STATE'],
      ...r.tasks.map((task) => [task.service, task.node.slice(0, 12), task.addr, task.state]),
    ]
    return [
      `${r.release}:`,
      ...formatTable(rows)
        .split('\n')
        .map((line) => `  ${line}`),
    ]
  })
}

/** Prints what a signed POST started, then either returns or follows it; a deploy that did not succeed exits 1. */
async function startedThen(client: AgentClient, started: Started, opts: { json?: boolean; follow?: boolean }, what: string): Promise<void> {
  if (!opts.follow) {
    if (opts.json) {
      console.log(JSON.stringify(started))
      return
    }
    console.log(`${started.id}  ${painter().state(started.state)}  ${what}`)
    if (started.state === 'AWAITING_APPROVAL') console.log(`awaiting approval: run \`deploy-agent approve ${started.id}\``)
    console.log(`follow it: deploy-agent logs -f ${started.id}`)
    return
  }
  if (!opts.json) console.log(`${started.id}  ${painter().state(started.state)}  ${what}`)
  const done = await followDeploy(client, started.id, { json: opts.json })
  if (done.state !== (started.endsAs ?? 'SUCCEEDED')) process.exitCode = 1
}

function parseLimit(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  if (!/^[1-9][0-9]{0,3}$/.test(value)) throw new UsageError(`--limit must be a whole number from 1 to 9999, not "${value}"`)
  return Number(value)
}

export function addDeployCommands(program: Command): void {
  withClientOptions(
    program
      .command('deploy')
      .description('deploy a ref (a tag or branch) to an app env; with --follow, wait for the end and exit 0 only on SUCCEEDED')
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app')
      .argument('<ref>', "tag or branch name, as the env's ref rule allows")
      .option('--commit <sha>', 'pin the commit (40 hex) the ref must resolve to')
      .option('--digest <sha256:hex>', "an image app's pin: the manifest digest the tag must resolve to")
      .option('--reason <text>', 'recorded with the deploy')
      .option('-f, --follow', 'stream the deploy log until the deploy ends')
      .option('--json', 'print JSON (with --follow: the log as NDJSON, then the deploy record)'),
  )
    .addHelpText('after', example('deploy-agent deploy shop production v1.4.2 --reason "release 1.4.2" --follow'))
    .action(
      async (
        app: string,
        env: string,
        ref: string,
        opts: ClientFlags & { commit?: string; digest?: string; reason?: string; follow?: boolean },
      ) => {
        const client = await clientFrom(opts)
        const body = {
          ref,
          ...(opts.commit !== undefined && { commit: opts.commit }),
          ...(opts.digest !== undefined && { digest: opts.digest }),
          ...(opts.reason !== undefined && { reason: opts.reason }),
        }
        const started = await client.post<Started>(`${envPath(app, env)}/deploys`, body)
        await startedThen(client, started, opts, `deploy ${app}/${env} ${ref}`)
      },
    )

  withClientOptions(
    program
      .command('rollback')
      .description('switch an app env back to the previous kept release (or --to a named one)')
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app')
      .option('--to <release>', 'a kept release (see `deploy-agent releases`)')
      .option('--force', "allow a release that never served or whose last deploy failed (recorded in the rollback's reason)")
      .option('--reason <text>', 'recorded with the rollback')
      .option(
        '-f, --follow',
        'stream the rollback log until it ends; exit 0 only when it worked (SUCCEEDED; ROLLED_BACK for a deploy in its observe window)',
      )
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      example(
        'deploy-agent rollback shop production --follow',
        'deploy-agent rollback shop production --to v1.4.1',
        'deploy-agent rollback shop production --to v1.5.0 --force --reason "migration reverted by hand"',
      ),
    )
    .action(async (app: string, env: string, opts: ClientFlags & { to?: string; force?: boolean; reason?: string; follow?: boolean }) => {
      const client = await clientFrom(opts)
      const body = {
        ...(opts.to !== undefined && { to: opts.to }),
        ...(opts.force === true && { force: true }),
        ...(opts.reason !== undefined && { reason: opts.reason }),
      }
      const started = await client.post<Started>(`${envPath(app, env)}/rollback`, body)
      const inWindow = started.endsAs === 'ROLLED_BACK' ? ` (deploy ${started.id} was in its observe window: it rolls back)` : ''
      await startedThen(client, started, opts, `rollback ${app}/${env} to ${started.release ?? '?'}${inWindow}`)
    })

  withClientOptions(
    program
      .command('approve')
      .description('let a deploy held in AWAITING_APPROVAL proceed (signed with a key that has allow.approve, not the requesting one)')
      .argument('<id>', 'deploy id')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', example('deploy-agent approve d_0123456789ab && deploy-agent logs -f d_0123456789ab'))
    .action(async (id: string, opts: ClientFlags) => {
      const approved = await (await clientFrom(opts)).post<Started>(`${deployPath(id)}/approve`, {})
      if (opts.json) console.log(JSON.stringify(approved))
      else console.log(`${approved.id}  ${painter().state(approved.state)}  approved`)
    })

  withClientOptions(
    program
      .command('logs')
      .description("print a deploy's log; with -f, follow it to the end and exit 0 only on SUCCEEDED")
      .argument('<id>', 'deploy id')
      .option('-f, --follow', 'stream new lines until the deploy ends')
      .option('--json', 'print the raw NDJSON log'),
  )
    .addHelpText('after', example('deploy-agent logs d_0123456789ab', 'deploy-agent logs -f d_0123456789ab'))
    .action(async (id: string, opts: ClientFlags & { follow?: boolean }) => {
      const client = await clientFrom(opts)
      if (opts.follow) {
        const done = await followDeploy(client, id, { json: opts.json })
        if (done.state !== 'SUCCEEDED') process.exitCode = 1
        return
      }
      const paint = painter()
      let awaiting = false
      if (!opts.json) awaiting = (await client.get<DeployView>(deployPath(id))).state === 'AWAITING_APPROVAL'
      for await (const event of client.stream(`${deployPath(id)}/log`)) {
        if (opts.json) console.log(JSON.stringify(event))
        else for (const line of formatEvent(event, paint)) console.log(line)
      }
      if (awaiting) console.log(awaitingApprovalLine(id).replace(' (still following)', ''))
    })

  withClientOptions(
    program
      .command('deploys')
      .description('deploy history, newest first')
      .option('--app <app>', 'only this app')
      .option('--env <env>', 'only this env')
      .option('--limit <n>', 'at most n deploys (default 50)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', example('deploy-agent deploys --app shop --env production --limit 10'))
    .action(async (opts: ClientFlags & { app?: string; env?: string; limit?: string }) => {
      const limit = parseLimit(opts.limit)
      const query = new URLSearchParams()
      if (opts.app !== undefined) query.set('app', opts.app)
      if (opts.env !== undefined) query.set('env', opts.env)
      if (limit !== undefined) query.set('limit', String(limit))
      const path = query.size > 0 ? `/v1/deploys?${query}` : '/v1/deploys'
      const body = await (await clientFrom(opts)).get<{ deploys: DeployView[] }>(path)
      if (opts.json) {
        console.log(JSON.stringify(body, null, 2))
        return
      }
      const paint = painter()
      const rows = [['ID', 'KIND', 'APP', 'ENV', 'REF', 'STATE', 'CREATED']]
      for (const d of body.deploys) rows.push([d.id, d.kind, d.app, d.env, d.ref, paint.state(d.state), shortTime(d.createdAt)])
      console.log(formatTable(rows))
    })

  withClientOptions(
    program
      .command('releases')
      .description(
        'the releases an app env keeps for rollback, newest first; * marks the live one, OUTCOME says how its last deploy or rollback ended',
      )
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', example('deploy-agent releases shop production'))
    .action(async (app: string, env: string, opts: ClientFlags) => {
      const body = await (await clientFrom(opts)).get<ReleasesBody>(`${envPath(app, env)}/releases`)
      if (opts.json) {
        console.log(JSON.stringify(body, null, 2))
        return
      }
      const rows = [['RELEASE', 'COMMIT', 'CREATED', 'LIVE', 'OUTCOME', 'DEPLOY']]
      for (const r of body.releases)
        rows.push([
          r.release,
          // an image app's releases carry the digest they were pulled by
          r.commit.slice(0, r.commit.startsWith('sha256:') ? 19 : 12),
          shortTime(r.createdAt),
          r.live ? '*' : '',
          r.outcome?.replace('_', ' ') ?? '-',
          r.deployId ?? '-',
        ])
      console.log(formatTable(rows))
      const tasks = releaseTasks(body.releases)
      if (tasks.length > 0) console.log(`\n${tasks.join('\n')}`)
    })

  withClientOptions(
    program
      .command('app-logs')
      .description("print the output of an env's live app container; with -f, keep printing new lines")
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app')
      .option('--service <name>', 'the service whose output to show (default: the first web service, `web` without services)')
      .option('--tail <n>', 'the last n lines (default 200, at most 5000)')
      .option('--since <time>', 'only lines from this time on: ISO (2026-05-01T12:00:00Z) or unix seconds')
      .option('-f, --follow', 'keep printing new lines until Ctrl-C (or the container stops)')
      .option('--json', 'print the raw NDJSON lines'),
  )
    .addHelpText('after', example('deploy-agent app-logs shop production --tail 50', 'deploy-agent app-logs shop production -f'))
    .action(async (app: string, env: string, opts: ClientFlags & { service?: string; tail?: string; since?: string; follow?: boolean }) => {
      const query = new URLSearchParams()
      if (opts.service !== undefined) query.set('service', opts.service)
      if (opts.tail !== undefined) query.set('tail', opts.tail)
      if (opts.since !== undefined) query.set('since', opts.since)
      if (opts.follow) query.set('follow', '1')
      const path = query.size > 0 ? `${envPath(app, env)}/logs?${query}` : `${envPath(app, env)}/logs`
      for await (const event of (await clientFrom(opts)).stream(path)) {
        if (event.event === 'heartbeat') continue
        if (opts.json) console.log(JSON.stringify(event))
        else console.log(`${clock(event.at)} ${event.stream === 'stderr' ? 'err' : 'out'}  ${printable(String(event.line ?? ''))}`)
      }
    })
}
