// GitMirror and TagLedger against real git: temp upstream repositories, a bare mirror, real `git archive` tars.
import { execFile } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { access, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import t from 'tap'
import { GitMirror, validateRefName } from '../../agent/git/mirror.js'
import { TagLedger } from '../../agent/git/tag-ledger.js'
import { makeGitRepo, type GitRepo } from '../helpers/git.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)

// The same isolation as test/helpers/git.ts, for changes made to an upstream after makeGitRepo.
const upstreamEnv = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', GIT_TERMINAL_PROMPT: '0' }
async function git(cwd: string, args: string[]): Promise<string> {
  const { stdout } = await run('git', args, { cwd, env: upstreamEnv })
  return stdout.trim()
}

/** Commits `files` on the upstream's current branch and returns the new commit. */
async function commit(repo: GitRepo, files: Record<string, string>, message = 'more'): Promise<string> {
  for (const [name, content] of Object.entries(files)) await writeFile(join(repo.path, name), content)
  await git(repo.path, ['add', '--all'])
  await git(repo.path, ['commit', '--quiet', '-m', message])
  return await git(repo.path, ['rev-parse', 'HEAD'])
}

const exists = async (path: string) =>
  await access(path).then(
    () => true,
    () => false,
  )

/** An upstream with v1.0.0 (lightweight) on the first commit and v1.1.0 (annotated) on the second, and its mirror. */
async function setup(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t)
  const upstream = await makeGitRepo(join(dir, 'upstream'), [
    { files: { Dockerfile: 'FROM scratch\n', 'app/main.txt': 'one\n' }, tag: 'v1.0.0' },
    { files: { 'app/main.txt': 'two\n', 'app/lib/util.txt': 'util\n' }, tag: 'v1.1.0', annotated: true },
  ])
  const mirror = new GitMirror({ url: upstream.path, dir: join(dir, 'state', 'repos', 'app.git'), timeoutMs: 30_000 })
  return { dir, upstream, mirror }
}

/** The member names of the tar `stream` yields, as `tar -t` lists them. */
async function tarList(dir: string, stream: NodeJS.ReadableStream): Promise<string[]> {
  const file = join(dir, `archive-${Math.random().toString(16).slice(2)}.tar`)
  await pipeline(stream, createWriteStream(file))
  const { stdout } = await run('tar', ['-tf', file])
  return stdout.split('\n').filter(Boolean).sort()
}

t.test('GitMirror: clone, then a fetch picks up a new tag and a new branch commit', async (t) => {
  const { upstream, mirror } = await setup(t)
  await t.rejects(mirror.resolveTag('v1.0.0'), { code: 'mirror_missing' }, 'nothing to resolve before the first fetch')
  await mirror.fetch()
  t.equal(await mirror.resolveBranch('main'), upstream.commits[1])
  await t.rejects(mirror.resolveTag('v2.0.0'), { code: 'ref_not_found', statusCode: 404 })

  const head = await commit(upstream, { 'app/main.txt': 'three\n' })
  await git(upstream.path, ['tag', 'v2.0.0'])
  await git(upstream.path, ['branch', 'feature/x'])
  t.equal(await mirror.resolveBranch('main'), upstream.commits[1], 'unchanged until fetched')
  await mirror.fetch()
  t.equal(await mirror.resolveBranch('main'), head)
  t.equal(await mirror.resolveBranch('feature/x'), head)
  t.same(await mirror.resolveTag('v2.0.0'), { commit: head, annotated: false })
  t.same(await mirror.listTags(), [
    { name: 'v1.0.0', commit: upstream.tags['v1.0.0'] },
    { name: 'v1.1.0', commit: upstream.tags['v1.1.0'] },
    { name: 'v2.0.0', commit: head },
  ])
})

t.test('GitMirror: concurrent fetches are serialised and both succeed', async (t) => {
  const { upstream, mirror } = await setup(t)
  await Promise.all([mirror.fetch(), mirror.fetch(), mirror.fetch()])
  t.equal(await mirror.resolveBranch('main'), upstream.commits[1])
})

t.test('GitMirror: an annotated tag peels to its commit, a lightweight tag is its commit', async (t) => {
  const { upstream, mirror } = await setup(t)
  await mirror.fetch()
  const annotated = await mirror.resolveTag('v1.1.0')
  t.same(annotated, { commit: upstream.tags['v1.1.0'], annotated: true })
  const tagObject = await git(upstream.path, ['rev-parse', 'refs/tags/v1.1.0'])
  t.not(annotated.commit, tagObject, 'the commit, not the tag object')
  t.same(await mirror.resolveTag('v1.0.0'), { commit: upstream.tags['v1.0.0'], annotated: false })
})

t.test('GitMirror: a tag of a tag peels fully; a tag of a tree is no release', async (t) => {
  const { upstream, mirror } = await setup(t)
  await git(upstream.path, ['tag', '-a', '-m', 'nested', 'v1.1.0-nested', 'v1.1.0'])
  await git(upstream.path, ['tag', 'tree-tag', 'HEAD^{tree}'])
  await mirror.fetch()
  t.same(await mirror.resolveTag('v1.1.0-nested'), { commit: upstream.tags['v1.1.0'], annotated: true })
  await t.rejects(mirror.resolveTag('tree-tag'), { code: 'ref_not_found', message: /does not point to a commit/ })
  t.same(await mirror.listTags(), [
    { name: 'v1.0.0', commit: upstream.tags['v1.0.0'] },
    { name: 'v1.1.0', commit: upstream.tags['v1.1.0'] },
    { name: 'v1.1.0-nested', commit: upstream.tags['v1.1.0'] },
  ])
})

t.test('GitMirror: missing refs are ref_not_found, unsafe ones invalid_ref before git runs', async (t) => {
  const { mirror } = await setup(t)
  await mirror.fetch()
  await t.rejects(mirror.resolveTag('v9.9.9'), { code: 'ref_not_found', statusCode: 404 })
  await t.rejects(mirror.resolveBranch('nope'), { code: 'ref_not_found', statusCode: 404 })
  t.equal(await mirror.hasCommit('0123456789abcdef0123456789abcdef01234567'), false)
  for (const ref of ['-x', '--upload-pack=touch pwned', 'a..b', 'main@{1}', 'v1^{tree}']) {
    await t.rejects(mirror.resolveTag(ref), { code: 'invalid_ref', statusCode: 400 }, ref)
    await t.rejects(mirror.resolveBranch(ref), { code: 'invalid_ref', statusCode: 400 }, ref)
  }
})

t.test('GitMirror: a tag deleted upstream disappears after fetch', async (t) => {
  const { upstream, mirror } = await setup(t)
  await mirror.fetch()
  t.equal((await mirror.resolveTag('v1.0.0')).commit, upstream.tags['v1.0.0'])
  await git(upstream.path, ['tag', '-d', 'v1.0.0'])
  await mirror.fetch()
  await t.rejects(mirror.resolveTag('v1.0.0'), { code: 'ref_not_found' })
  t.same(
    (await mirror.listTags()).map((tag) => tag.name),
    ['v1.1.0'],
  )
})

t.test('GitMirror: a tag force-moved upstream is fetched, and TagLedger refuses it', async (t) => {
  const { dir, upstream, mirror } = await setup(t)
  const ledger = await TagLedger.open(join(dir, 'state', 'tags.json'))
  await mirror.fetch()
  const first = await mirror.resolveTag('v1.1.0')
  ledger.check('app', 'v1.1.0', first.commit)
  await ledger.record('app', 'v1.1.0', first.commit)

  const moved = await commit(upstream, { 'app/main.txt': 'sneaky\n' })
  await git(upstream.path, ['tag', '-f', '-a', '-m', 'moved', 'v1.1.0', moved])
  await mirror.fetch()
  const now = await mirror.resolveTag('v1.1.0')
  t.same(now, { commit: moved, annotated: true }, 'the mirror follows the forced move')

  const err = await t.rejects(async () => ledger.check('app', 'v1.1.0', now.commit), { code: 'tag_moved', statusCode: 409 })
  t.match(String(err), first.commit, 'the message names the old commit')
  t.match(String(err), moved, 'and the new one')
  const reopened = await TagLedger.open(join(dir, 'state', 'tags.json'))
  t.throws(() => reopened.check('app', 'v1.1.0', moved), { code: 'tag_moved' }, 'remembered across restarts')
  await t.rejects(reopened.record('app', 'v1.1.0', moved), { code: 'tag_moved' })
})

t.test('GitMirror: archive of a commit is a tar of its tree; a subdir archive roots at the subdir', async (t) => {
  const { dir, upstream, mirror } = await setup(t)
  await mirror.fetch()
  const second = upstream.commits[1] ?? ''
  t.same(await tarList(dir, mirror.archive(second)), ['Dockerfile', 'app/', 'app/lib/', 'app/lib/util.txt', 'app/main.txt'])
  t.same(await tarList(dir, mirror.archive(upstream.commits[0] ?? '')), ['Dockerfile', 'app/', 'app/main.txt'])
  t.same(await tarList(dir, mirror.archive(second, 'app')), ['lib/', 'lib/util.txt', 'main.txt'])
  t.same(await tarList(dir, mirror.archive(second, './app/lib/')), ['util.txt'])

  const file = join(dir, 'main.tar')
  await pipeline(mirror.archive(second, 'app'), createWriteStream(file))
  await run('tar', ['-xf', file, 'main.txt'], { cwd: dir })
  t.equal(await readFile(join(dir, 'main.txt'), 'utf8'), 'two\n', "file contents are the commit's")
})

t.test('GitMirror: archive of a missing commit or subdir emits an error on the stream', async (t) => {
  const { dir, upstream, mirror } = await setup(t)
  await mirror.fetch()
  await t.rejects(pipeline(mirror.archive('0123456789abcdef0123456789abcdef01234567'), createWriteStream(join(dir, 'a.tar'))), {
    code: 'git_archive_failed',
    stderr: /\S/,
  })
  await t.rejects(pipeline(mirror.archive(upstream.commits[0] ?? '', 'nope'), createWriteStream(join(dir, 'b.tar'))), {
    code: 'git_archive_failed',
  })
  const chunks: Buffer[] = []
  const stream = mirror.archive(upstream.commits[0] ?? '', 'Dockerfile') // a file, not a tree
  await t.rejects(
    (async () => {
      for await (const chunk of stream) chunks.push(chunk as Buffer)
    })(),
    { code: 'git_archive_failed' },
  )
})

t.test('GitMirror: destroying an archive stream early is quiet and stops git', async (t) => {
  const { upstream, mirror } = await setup(t)
  await mirror.fetch()
  const stream = mirror.archive(upstream.commits[1] ?? '') as NodeJS.ReadableStream & { destroy: () => void; destroyed: boolean }
  const errors: unknown[] = []
  stream.on('error', (err) => errors.push(err))
  stream.destroy()
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(stream.destroyed, true)
  t.same(errors, [], 'no error after the consumer gave up')
})

t.test('GitMirror: a git command over its time limit fails with git_fetch_failed', async (t) => {
  const { dir, upstream } = await setup(t)
  const slow = new GitMirror({ url: upstream.path, dir: join(dir, 'slow.git'), timeoutMs: 1 })
  await t.rejects(slow.fetch(), { code: 'git_fetch_failed', message: /timed out after 1 ms/ })
  t.equal(await exists(join(dir, 'slow.git')), false)
})

t.test('GitMirror: archive validates its arguments before running git', async (t) => {
  const { upstream, mirror } = await setup(t)
  const good = upstream.commits[0] ?? ''
  for (const bad of ['HEAD', '--output=/tmp/x', good.toUpperCase(), `${good}0`]) {
    t.throws(() => mirror.archive(bad), { code: 'invalid_commit', statusCode: 400 }, bad)
  }
  for (const bad of ['../etc', 'app/../..', '/etc', '-x', '--remote=ext::sh']) {
    t.throws(() => mirror.archive(good, bad), { code: 'invalid_path', statusCode: 400 }, bad)
  }
})

t.test('GitMirror: isAncestor', async (t) => {
  const { upstream, mirror } = await setup(t)
  await git(upstream.path, ['checkout', '--quiet', '-b', 'side', upstream.commits[0] ?? ''])
  const side = await commit(upstream, { 'side.txt': 'side\n' })
  await mirror.fetch()
  const [first = '', second = ''] = upstream.commits
  t.equal(await mirror.isAncestor(first, second), true)
  t.equal(await mirror.isAncestor(second, second), true, 'a commit is its own ancestor')
  t.equal(await mirror.isAncestor(second, first), false)
  t.equal(await mirror.isAncestor(side, second), false, 'a sibling branch is not')
  t.equal(await mirror.hasCommit(side), true)
  await t.rejects(mirror.isAncestor('0123456789abcdef0123456789abcdef01234567', second), { code: 'ref_not_found' })
  await t.rejects(mirror.isAncestor('main', second), { code: 'invalid_commit' })
})

t.test('GitMirror: an ext:: or option-like url fails and runs nothing', async (t) => {
  const dir = await tempDir(t)
  const marker = join(dir, 'pwned')
  // The check is meaningful: plain git with ext:: allowed does run the command.
  const control = join(dir, 'control')
  await git(dir, ['-c', 'protocol.ext.allow=always', 'clone', `ext::sh -c touch% ${control}`, join(dir, 'c')]).catch(() => undefined)
  t.equal(await exists(control), true, 'ext:: runs commands when allowed')

  for (const url of [`ext::sh -c touch% ${marker}`, 'ext::sh -c touch /tmp/pwned', `fd::0`, `--upload-pack=touch ${marker}`]) {
    const mirrorDir = join(dir, 'repos', 'app.git')
    const mirror = new GitMirror({ url, dir: mirrorDir, timeoutMs: 10_000 })
    await t.rejects(mirror.fetch(), { code: 'git_fetch_failed', statusCode: 502 }, url)
    t.equal(await exists(marker), false, `${url}: nothing ran`)
    t.equal(await exists(mirrorDir), false, `${url}: no mirror left behind`)
  }
})

t.test('GitMirror: credentials in the url never reach error messages', async (t) => {
  const dir = await tempDir(t)
  const mirror = new GitMirror({ url: 'https://deployer:s3cret-token@127.0.0.1:1/app.git', dir: join(dir, 'app.git'), timeoutMs: 10_000 })
  t.equal(mirror.safeUrl, 'https://***@127.0.0.1:1/app.git')
  const err = await t.rejects(mirror.fetch(), { code: 'git_fetch_failed' })
  t.notMatch(JSON.stringify({ message: (err as Error).message, stderr: (err as { stderr?: string }).stderr }), 's3cret')
})

t.test("GitMirror: a repository owned by another user fails with git's reason and the safe.directory to add", async (t) => {
  const { upstream, mirror } = await setup(t)
  await mirror.fetch()
  // The agent runs as root here: an upstream owned by nobody is the real "dubious ownership" case.
  await run('chown', ['-R', 'nobody', upstream.path])
  const user = (await run('id', ['-un'])).stdout.trim()
  for (const attempt of ['fetch', 'clone']) {
    const fresh = attempt === 'fetch' ? mirror : new GitMirror({ url: upstream.path, dir: join(mirror.dir, '..', 'again.git') })
    const err = (await t.rejects(fresh.fetch(), { code: 'git_fetch_failed' }, attempt)) as Error
    t.match(err.message, `detected dubious ownership in repository at '${upstream.path}`, `${attempt}: git's own reason`)
    t.match(err.message, `git config --global --add safe.directory ${upstream.path}`, `${attempt}: the command to run`)
    t.match(err.message, `as ${user}`, `${attempt}: as which user`)
    t.notMatch(err.message, /and the repository exists/, `${attempt}: not git's closing advice`)
  }
})

t.test('GitMirror: a changed repo url is followed on the next fetch', async (t) => {
  const { dir, upstream, mirror } = await setup(t)
  await mirror.fetch()
  const other = await makeGitRepo(join(dir, 'other'), [{ files: { 'x.txt': 'x\n' }, tag: 'v7.0.0' }])
  const moved = new GitMirror({ url: other.path, dir: mirror.dir })
  await moved.fetch()
  t.equal((await moved.resolveTag('v7.0.0')).commit, other.tags['v7.0.0'])
  await t.rejects(moved.resolveTag('v1.0.0'), { code: 'ref_not_found' }, "the old repo's tags are pruned")
  t.not(await moved.resolveBranch('main'), upstream.commits[1])
})

t.test('validateRefName: refuses option-like and traversal refs', async (t) => {
  for (const ref of ['-x', '--upload-pack=x', 'a..b']) t.throws(() => validateRefName(ref), { code: 'invalid_ref', statusCode: 400 }, ref)
  t.equal(validateRefName('v1.2.3'), 'v1.2.3')
})
