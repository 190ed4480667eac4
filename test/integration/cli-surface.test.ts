// The CLI's operator surface, as the real binary run by CI (a child process, so never a terminal) against a real
// agent (`serve`) and PostgreSQL: --json parses for every data command, each documented exit code happens, and
// colour escape codes appear only when FORCE_COLOR asks and NO_COLOR does not forbid.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { buildProgram } from '../../agent/cli/program.js'
import { cliEnvFor, runCli, startServe, type CliResult } from '../helpers/cli.js'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

const ESC = '\x1b['
const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const docker = await dockerAvailable()

/**
 * Runs a command in this process (the same program the binary runs, without a child's start-up cost, which a
 * loaded CI box multiplies by dozens of runs) with `env` set for its duration; stdout is what it console.logs.
 */
async function inProcess(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const saved = { env: { ...process.env }, log: console.log, error: console.error, exitCode: process.exitCode }
  let stdout = ''
  let stderr = ''
  Object.assign(process.env, env)
  console.log = (...parts: unknown[]) => void (stdout += `${parts.join(' ')}\n`)
  console.error = (...parts: unknown[]) => void (stderr += `${parts.join(' ')}\n`)
  process.exitCode = undefined
  try {
    await buildProgram().parseAsync(args, { from: 'user' })
    return { code: Number(process.exitCode ?? 0), stdout, stderr }
  } catch (err) {
    return { code: -1, stdout, stderr: `${stderr}${String(err)}` }
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved.env)) delete process.env[key]
    Object.assign(process.env, saved.env)
    console.log = saved.log
    console.error = saved.error
    process.exitCode = saved.exitCode
  }
}

/** Runs the named tasks two at a time (the box has two cores; more children would only crowd out each other). */
async function twoAtATime<K extends string>(tasks: Record<K, () => Promise<CliResult>>): Promise<Record<K, CliResult>> {
  const entries = Object.entries(tasks) as Array<[K, () => Promise<CliResult>]>
  const results = {} as Record<K, CliResult>
  for (let i = 0; i < entries.length; i += 2) {
    await Promise.all(entries.slice(i, i + 2).map(async ([name, task]) => (results[name] = await task())))
  }
  return results
}

/** The parsed stdout of a --json command that must have succeeded. */
function json<T = Record<string, unknown>>(t: Test, what: string, result: CliResult): T {
  t.equal(result.code, 0, `${what}: exit 0`, { stderr: result.stderr })
  try {
    return JSON.parse(result.stdout) as T
  } catch {
    t.fail(`${what}: stdout is not JSON`, { stdout: result.stdout })
    return {} as T
  }
}

t.test('CLI surface: --json, exit codes and colour against a real agent', { skip }, async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const db = await createTempDatabase(t)
  t.teardown(async () => {
    const left = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db.name}_%'`)
    for (const { datname } of left) await query('postgres', `DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
  })
  await query(db.name, 'CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2)')
  await writeFile(join(dir, 'db.password'), 'postgres\n', { mode: 0o600 })

  const [port, closedPort, ...ports] = (await freePorts(8)) as number[]
  const base = testConfigDocument(dir)
  const configPath = join(dir, 'agent.yaml')
  await writeFile(
    configPath,
    stringify({
      ...base,
      listen: { host: '127.0.0.1', port },
      apps: {
        web: {
          repo: join(dir, 'no-such-repo.git'),
          envs: {
            staging: { ref: 'branch:main', ports: [ports[0], ports[1]] },
            production: { ref: 'tag:v*.*.*', ports: [ports[2], ports[3]], requireApproval: true },
          },
        },
        shop: {
          repo: join(dir, 'no-such-repo.git'),
          envs: {
            production: {
              ref: 'tag:v*',
              ports: [ports[4], ports[5]],
              database: { url: `postgres://postgres@127.0.0.1:5432/${db.name}`, passwordFile: 'db.password' },
            },
          },
        },
      },
      backups: { dir: join(dir, 'backups'), verify: 'full' },
    }),
  )
  const url = `http://127.0.0.1:${port}`
  const agent = await startServe(configPath, url)
  t.teardown(() => agent.stop('SIGKILL'))
  await agent.nightlyCatchUpDone()
  // Colour left to the tests that set it.
  const env = { ...cliEnvFor(url, keys.dir), NO_COLOR: '', FORCE_COLOR: '' }
  const cli = (...args: string[]) => runCli(args, env)
  const run = (...args: string[]) => inProcess(args, env)
  const deployState = async (id: string) =>
    (
      (await (await fetch(`${url}/v1/deploys/${id}`, { headers: { authorization: `Bearer ${keys.statusToken}` } })).json()) as {
        state: string
      }
    ).state

  await t.test('--json parses for every data command', async (t) => {
    t.match(json(t, 'status', await run('status', '--json')), {
      agent: { version: String },
      apps: { web: { envs: { staging: { live: null } } } },
    })

    const started = json<{ id: string; state: string }>(
      t,
      'deploy',
      await run('deploy', 'web', 'staging', 'main', '--json', '--reason', 'json'),
    )
    t.match(started, { id: /^d_/, state: 'QUEUED' })
    const held = json<{ id: string }>(t, 'deploy (approval)', await run('deploy', 'web', 'production', 'v1.0.0', '--json'))
    for (let i = 0; i < 200 && (await deployState(held.id)) !== 'AWAITING_APPROVAL'; i++) await new Promise((r) => setTimeout(r, 50))
    const approver = { ...env, DEPLOY_AGENT_KEY_ID: 'approver', DEPLOY_AGENT_KEY_FILE: join(keys.dir, 'approver.key') }
    t.match(json(t, 'approve', await inProcess(['approve', held.id, '--json'], approver)), {
      id: held.id,
      state: String,
      approvedBy: 'approver',
    })

    const listed = json<{ deploys: Array<{ id: string }> }>(t, 'deploys', await run('deploys', '--json', '--app', 'web'))
    t.ok(
      listed.deploys.some((d) => d.id === started.id),
      'deploys lists the deploy',
    )
    const log = await run('logs', started.id, '--json')
    t.equal(log.code, 0, log.stderr)
    const events = log.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string })
    t.ok(events.length > 0 && events.every((e) => typeof e.event === 'string'), 'logs --json: one JSON event per line')
    if (docker) t.match(json(t, 'releases', await run('releases', 'web', 'staging', '--json')), { releases: [], keepReleases: 5 })

    const backup = json<{ id: string; verified: { ok: boolean } }>(t, 'backup', await run('backup', 'shop', 'production', '--json'))
    t.match(backup, { id: /^[0-9a-f]{8}$/, app: 'shop', env: 'production', verified: { ok: true } })
    // (The list also holds the backup the start-up catch-up took.)
    t.ok(
      json<{ backups: Array<{ id: string }> }>(t, 'backups', await run('backups', '--json')).backups.some((b) => b.id === backup.id),
      'backups lists the backup',
    )
    t.match(json(t, 'backups verify', await run('backups', 'verify', backup.id, '--json')), { ok: true })
    const pruned = json<{ plan: Array<{ id: string; keep: boolean }> }>(
      t,
      'backups prune',
      await run('backups', 'prune', 'shop', 'production', '--dry-run', '--json'),
    )
    t.match(pruned, { plan: Array, text: String })
    t.match(
      pruned.plan.find((d) => d.id === backup.id),
      { keep: true },
      'the dry run keeps the backup',
    )
    t.match(json(t, 'restore', await run('restore', backup.id, '--yes', '--json')), {
      database: db.name,
      oldDatabase: new RegExp(`^${db.name}_old_`),
      prerestore: { id: String },
    })
    t.match(json(t, 'backup --no-wait', await run('backup', 'shop', 'production', '--no-wait', '--json')), { id: /^[0-9a-f]{8}$/ })

    t.match(json(t, 'check-config', await run('check-config', '--config', configPath, '--json')), { ok: true, apps: 2, envs: 3, keys: 5 })
    const keygen = json<{ written: string[]; kept: string[] }>(
      t,
      'keygen',
      await run('keygen', '--name', 'k', '--out-dir', join(dir, 'new-keys'), '--json'),
    )
    t.same(keygen, { written: [join(dir, 'new-keys', 'k.key'), join(dir, 'new-keys', 'k.pub')], kept: [] })
    t.same(json(t, 'keygen again', await run('keygen', '--name', 'k', '--out-dir', join(dir, 'new-keys'), '--json')), {
      written: [],
      kept: keygen.written,
    })
    t.match(json(t, 'keygen to stdout', await run('keygen', '--alg', 'hmac-sha256', '--json')), {
      files: [{ name: 'ci.secret', mode: '0600', content: /^[A-Za-z0-9_-]{43}\n$/ }],
    })
    t.match(json(t, 'sign', await run('sign', '--path', '/v1/status', '-X', 'GET', '--json')), {
      method: 'GET',
      url: `${url}/v1/status`,
      headers: { 'Deploy-Key-Id': 'ci', 'Deploy-Timestamp': /^\d+$/, 'Deploy-Nonce': String, 'Deploy-Signature': /^v1=/ },
      body: '',
    })
  })

  await t.test('exit codes: 0 ok, 1 refused or failed, 2 bad usage or config, 3 unreachable', async (t) => {
    await writeFile(join(dir, 'bad.yaml'), 'listen: { port: 0 }\n')
    // Independent runs of the binary, two at a time: each exit code comes from main.ts as an operator sees it.
    const { ok, unknownApp, refusedSignature, noRollback, badConfig, unknownOption, missingArgument, noKey, missingKeyFile, badUrl, down } =
      await twoAtATime({
        ok: () => cli('status'),
        unknownApp: () => cli('deploy', 'nope', 'staging', 'main'),
        refusedSignature: () => runCli(['status'], { ...env, DEPLOY_AGENT_STATUS_TOKEN_FILE: '', DEPLOY_AGENT_AUDIENCE: 'other.host' }),
        noRollback: () => cli('rollback', 'web', 'staging', '--json'),
        badConfig: () => cli('check-config', '--config', join(dir, 'bad.yaml'), '--json'),
        unknownOption: () => cli('status', '--bogus'),
        missingArgument: () => cli('deploy', 'web'),
        noKey: () => runCli(['deploy', 'web', 'staging', 'main'], { ...env, DEPLOY_AGENT_KEY_ID: '' }),
        missingKeyFile: () => runCli(['status', '--key-file', join(dir, 'missing.key')], { ...env, DEPLOY_AGENT_STATUS_TOKEN_FILE: '' }),
        badUrl: () => runCli(['status'], { ...env, DEPLOY_AGENT_URL: 'ftp://127.0.0.1' }),
        down: () => runCli(['status'], { ...env, DEPLOY_AGENT_URL: `http://127.0.0.1:${closedPort}` }),
      })
    t.equal(ok.code, 0, '0: ok', { stderr: ok.stderr })

    t.equal(unknownApp.code, 1, '1: the agent refused (unknown app)')
    t.match(unknownApp.stderr, /^error: not_found: /)
    t.equal(refusedSignature.code, 1, '1: the agent refused the signature (signed for another audience)')
    t.match(refusedSignature.stderr, /^error: unauthorized: /)
    t.equal(noRollback.code, 1, '1: a rollback with nothing to go back to is refused')
    t.equal(noRollback.stdout, '', 'with --json a refusal prints nothing on stdout, so a JSON reader never sees half a document')
    t.match(noRollback.stderr, /^error: \w+: /)

    t.equal(badConfig.code, 2, '2: a bad config')
    // (DEPLOY_AGENT_AUDIENCE in the environment fills in the missing audience: it is also a config override.)
    t.match(JSON.parse(badConfig.stdout), { ok: false, problems: ['listen.port: must be a port number'] })
    for (const [result, why] of [
      [unknownOption, 'an unknown option'],
      [missingArgument, 'a missing argument'],
      [noKey, 'no signing key'],
      [missingKeyFile, 'an unreadable --key-file'],
      [badUrl, 'a URL that is not http(s)'],
    ] as const) {
      t.equal(result.code, 2, `2: ${why}`, { stderr: result.stderr })
      t.match(result.stderr, /error/i, `${why} is explained`)
    }
    t.match(missingKeyFile.stderr, /--key-file: cannot read .*missing\.key \(ENOENT\)/, 'the flag and the file are named')

    t.equal(down.code, 3, '3: nothing listens at the URL')
    t.match(down.stderr, new RegExp(`cannot reach the agent at http://127\\.0\\.0\\.1:${closedPort}: ECONNREFUSED`))
  })

  await t.test('colour: escape codes only with FORCE_COLOR and without NO_COLOR (a child process is no terminal)', async (t) => {
    const { plain, forced, forbidden, asJson } = await twoAtATime({
      plain: () => cli('deploys'),
      forced: () => runCli(['deploys'], { ...env, FORCE_COLOR: '1' }),
      forbidden: () => runCli(['deploys'], { ...env, FORCE_COLOR: '1', NO_COLOR: '1' }),
      asJson: () => runCli(['deploys', '--json'], { ...env, FORCE_COLOR: '1' }),
    })
    t.equal(plain.code, 0, plain.stderr)
    t.match(plain.stdout, /FAILED|SUCCEEDED|QUEUED|RESOLVING|AWAITING_APPROVAL/, 'the table shows states')
    t.notOk(plain.stdout.includes(ESC), 'not a terminal: no escape codes')
    t.ok(forced.stdout.includes(ESC), 'FORCE_COLOR=1: the states are coloured')
    t.match(forced.stdout, /^ID\s+KIND\s+APP\s+ENV\s+REF\s+STATE\s+CREATED$/m, 'and the header is plain')
    t.notOk(forbidden.stdout.includes(ESC), 'NO_COLOR=1 wins over FORCE_COLOR')
    t.notOk(asJson.stdout.includes(ESC), 'JSON is never coloured')
  })
})
