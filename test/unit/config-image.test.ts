import { writeFile } from 'node:fs/promises'
import t from 'tap'
import { loadConfig, parseConfig } from '../../agent/config/load.js'
import { knownSecrets } from '../../agent/observability/sentry.js'
import { tempDir } from '../helpers/tmp.js'
import { configProblems } from '../helpers/config.js'

const problems = configProblems

const app = (keys: string, ref = 'tag:v*') => `
audience: web-1
apps:
  api:
${keys
  .trim()
  .split('\n')
  .map((l) => `    ${l}`)
  .join('\n')}
    envs:
      production: { ref: "${ref}", ports: [18011, 18012] }
`

t.test('Config: an image app pulls a named image, with credentials from a file', async (t) => {
  const config = parseConfig(
    app('image: 127.0.0.1:5000/lifeos/api\nregistryAuth: { username: ci, passwordFile: registry.password }'),
    {},
    'agent.yaml',
    '/etc/deploy-agent',
  )
  const api = config.apps.api
  t.equal(api?.image, '127.0.0.1:5000/lifeos/api')
  t.equal(api?.repo, undefined)
  t.same(api?.registryAuth, { username: 'ci', passwordFile: '/etc/deploy-agent/registry.password' }, 'the file is relative to the config')
  t.equal(api?.pullTimeoutSec, 600)
  for (const image of ['registry.example.com/lifeos/api', 'lifeos/api', 'api', 'localhost:5000/a/b-c/d_e', 'docker.io/library/nginx']) {
    t.same(problems(app(`image: ${image}`)), [], image)
  }
})

t.test('Config: an app has exactly one of repo or image', async (t) => {
  t.same(problems(app('image: registry.example.com/api\nrepo: /srv/git/api.git')), [
    'apps.api.image: needs exactly one of repo (built from git) or image (pulled from a registry)',
  ])
  t.same(problems(app('keepReleases: 3')), ['apps.api.repo: needs exactly one of repo (built from git) or image (pulled from a registry)'])
})

t.test('Config: build and registryAuth belong to their kind of app', async (t) => {
  t.same(problems(app('image: registry.example.com/api\nbuild: { dockerfile: Dockerfile.prod }')), [
    'apps.api.build: is only for an app with repo: an image app is built by its CI',
  ])
  t.same(problems(app('repo: /srv/git/api.git\nregistryAuth: { username: ci, passwordFile: /etc/pw }')), [
    'apps.api.registryAuth: is only for an app with image',
  ])
})

t.test("Config: an image app's envs deploy tags, not branches", async (t) => {
  t.same(problems(app('image: registry.example.com/api', 'branch:main')), [
    'apps.api.envs.production.ref: an image app deploys image tags: use "tag:PATTERN" (e.g. "tag:v*" or "tag:main-*"), not a branch',
  ])
})

t.test('Config: an image name carries no tag or digest and is spelled as Docker spells it', async (t) => {
  const noTag = 'must be an image name without a tag or digest (a deploy names the tag as its ref)'
  const spelled = 'must be an image name such as registry.example.com/team/api (lower-case path)'
  t.same(problems(app('image: registry.example.com/api:v1')), [`apps.api.image: ${noTag}`])
  t.same(problems(app('image: 127.0.0.1:5000/api:latest')), [`apps.api.image: ${noTag}`])
  t.same(problems(app(`image: registry.example.com/api@sha256:${'a'.repeat(64)}`)), [`apps.api.image: ${noTag}`])
  t.same(problems(app('image: registry.example.com/Team/API')), [`apps.api.image: ${spelled}`])
  t.same(problems(app('image: "-api"')), [`apps.api.image: ${spelled}`])
  t.same(problems(app('image: "registry.example.com/../api"')), [`apps.api.image: ${spelled}`])
})

t.test('Config: the registry password is one of the secrets scrubbed from logs and reports', async (t) => {
  const dir = await tempDir(t)
  await writeFile(`${dir}/registry.password`, 'reg-pw-0123456789\n')
  await writeFile(
    `${dir}/agent.yaml`,
    app('image: registry.example.com/api\nregistryAuth: { username: ci, passwordFile: registry.password }'),
  )
  t.ok((await knownSecrets(await loadConfig(`${dir}/agent.yaml`, {}))).includes('reg-pw-0123456789'))
})

const NO_SERVICE_IMAGE =
  "is not supported: every service of a release runs the app's image (an image app's tag, pinned by one digest; a repo app's build or the service's own build); give the service its own command"

t.test("Config: an image app's services run its one image; a service names no image or build of its own", async (t) => {
  const services = (keys: string, service: string) => `
audience: web-1
apps:
  api:
    ${keys}
    services:
      api: { kind: web, command: [sh, /app/api.sh] }
      worker: { kind: worker, ${service} }
    envs:
      production: { ref: "tag:v*", ports: { api: [18011, 18012] } }
`
  t.same(problems(services('image: registry.example.com/api', 'command: [sh, /app/worker.sh]')), [], 'services with their own commands')
  const image = 'image: registry.example.com/worker'
  t.same(problems(services('image: registry.example.com/api', image)), [`apps.api.services.worker.image: ${NO_SERVICE_IMAGE}`])
  t.same(problems(services('image: registry.example.com/api', 'build: { context: worker }')), [
    'apps.api.services.worker.build: is only for an app with repo: an image app is built by its CI',
  ])
  t.same(problems(services('repo: /srv/git/api.git', image)), [`apps.api.services.worker.image: ${NO_SERVICE_IMAGE}`])
})
