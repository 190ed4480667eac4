import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget, containerSettings } from '../../agent/config/targets.js'
import { hardeningOf } from '../../agent/docker/types.js'
import { configProblems, shopConfig } from '../helpers/config.js'

const app = (container: string, envContainer = '') =>
  shopConfig(container === '' ? '' : `    container: ${container}\n`, envContainer === '' ? '' : `        container: ${envContainer}\n`)

const problems = configProblems

const settings = (container: string, envContainer = '') =>
  containerSettings(findTarget(parseConfig(app(container, envContainer), {}, 'agent.yaml', '/etc/deploy-agent'), 'shop', 'production'))

t.test('Config: containers drop NET_RAW and cannot gain privileges unless the app says otherwise', async (t) => {
  t.same(settings(''), { capDrop: ['NET_RAW'], capAdd: [], noNewPrivileges: true })
  t.same(settings('{ capDrop: [ALL], capAdd: [NET_BIND_SERVICE, CHOWN], memory: 512m, pids: 256 }'), {
    capDrop: ['ALL'],
    capAdd: ['NET_BIND_SERVICE', 'CHOWN'],
    noNewPrivileges: true,
    memory: 512 * 1024 * 1024,
    pids: 256,
  })
  t.same(settings('{ capDrop: [], noNewPrivileges: false }'), { capDrop: [], capAdd: [], noNewPrivileges: false }, 'an app may opt out')
  t.equal(settings('{ memory: 2G }').memory, 2 * 1024 ** 3, 'units are binary and case-insensitive')
  t.equal(settings('{ memory: 65536k }').memory, 64 * 1024 ** 2)
})

t.test('Config: an env overrides single container keys of its app', async (t) => {
  t.same(settings('{ memory: 256m, pids: 64 }', '{ memory: 1g }'), {
    capDrop: ['NET_RAW'],
    capAdd: [],
    noNewPrivileges: true,
    memory: 1024 ** 3,
    pids: 64,
  })
  t.same(settings('', '{ capDrop: [NET_RAW, MKNOD] }').capDrop, ['NET_RAW', 'MKNOD'], "a list replaces the app's list")
})

t.test('Config: bad container settings are reported with their key paths', async (t) => {
  t.same(problems(app('{ capDrop: [NET_RAWW, net_raw], capAdd: [ALL], memory: "512", pids: 0, privileged: true }')).sort(), [
    'apps.shop.container.capAdd[0]: must be a Linux capability name such as NET_BIND_SERVICE (ALL only in capDrop)',
    'apps.shop.container.capDrop[0]: must be a Linux capability name such as NET_RAW (or ALL), without CAP_',
    'apps.shop.container.capDrop[1]: must be a Linux capability name such as NET_RAW (or ALL), without CAP_',
    'apps.shop.container.memory: must be a size such as "512m" or "2g" (k, m or g: binary units)',
    'apps.shop.container.pids: must be > 0',
    'apps.shop.container.privileged: unknown key',
  ])
  t.same(problems(app('{ memory: 4m, capDrop: [CHOWN], capAdd: [CHOWN] }')).sort(), [
    'apps.shop.container.capAdd[0]: CHOWN is also in capDrop',
    "apps.shop.container.memory: must be at least 6m (Docker's smallest memory limit)",
  ])
  t.same(problems(app('', '{ memory: lots, noNewPrivileges: "yes" }')).sort(), [
    'apps.shop.envs.production.container.memory: must be a size such as "512m" or "2g" (k, m or g: binary units)',
    'apps.shop.envs.production.container.noNewPrivileges: must be true or false',
  ])
})

t.test('hardeningOf: container settings as Docker HostConfig fields', async (t) => {
  t.same(hardeningOf({ capDrop: ['NET_RAW'], capAdd: [], noNewPrivileges: true }), {
    CapDrop: ['NET_RAW'],
    CapAdd: [],
    SecurityOpt: ['no-new-privileges'],
  })
  t.same(hardeningOf({ capDrop: [], capAdd: ['NET_ADMIN'], noNewPrivileges: false, memory: 64 * 1024 ** 2, pids: 100 }), {
    CapDrop: [],
    CapAdd: ['NET_ADMIN'],
    SecurityOpt: [],
    // No swap on top: the limit means what it says.
    Memory: 64 * 1024 ** 2,
    MemorySwap: 64 * 1024 ** 2,
    PidsLimit: 100,
  })
})

t.test('Config: builds and migrations run at CPU weight 128 unless the app says otherwise', async (t) => {
  const appConfig = (extra: string) =>
    findTarget(parseConfig(app('').replace('    envs:', `${extra}    envs:`), {}, 'agent.yaml', '/etc/deploy-agent'), 'shop', 'production')
      .appConfig
  const defaults = appConfig('    migrate: { command: [migrate] }\n')
  t.equal(defaults.build.cpuShares, 128)
  t.equal(defaults.migrate?.cpuShares, 128)
  const own = appConfig('    build: { cpuShares: 1024 }\n    migrate: { command: [migrate], cpuShares: 512 }\n')
  t.equal(own.build.cpuShares, 1024)
  t.equal(own.migrate?.cpuShares, 512)
  t.same(
    problems(app('').replace('    envs:', '    build: { cpuShares: 1 }\n    migrate: { command: [m], cpuShares: 1.5 }\n    envs:')).sort(),
    ['apps.shop.build.cpuShares: must be ≥ 2', 'apps.shop.migrate.cpuShares: must be a whole number'],
  )
})
