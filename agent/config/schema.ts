// The config contract of DESIGN.md as one zod schema: defaults live here, and every message is written so that
// `<key path>: <message>` reads as a sentence.
import { isIP } from 'node:net'
import cron from 'node-cron'
import { z } from 'zod'
import { BACKGROUND_CPU_SHARES, DEFAULT_CONTAINER_SETTINGS } from '../docker/types.js'
import { dockerSocketProblems, volumesSchema } from './volumes.js'

export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,31}$/
const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const UPSTREAM_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/

const name = z.string({ error: 'must be a string' }).regex(NAME_PATTERN, { error: `must match ${NAME_PATTERN}` })
const nonEmpty = z.string({ error: 'must be a string' }).min(1, { error: 'must not be empty' })
/** A file path; relative paths are resolved against the config file's directory when it is loaded. */
const filePath = nonEmpty.refine((p) => !p.includes('\0'), { error: 'must be a file path' })
const port = z
  .number({ error: 'must be a port number' })
  .int({ error: 'must be a port number' })
  .min(1, { error: 'must be a port number' })
  .max(65535, { error: 'must be a port number' })
const positiveInt = z.number({ error: 'must be a number' }).int({ error: 'must be a whole number' }).positive({ error: 'must be > 0' })
const nonNegativeInt = z.number({ error: 'must be a number' }).int({ error: 'must be a whole number' }).min(0, { error: 'must be ≥ 0' })
const command = z
  .array(nonEmpty, { error: 'must be a list of strings (an argument array, not a shell string)' })
  .min(1, { error: 'must not be empty' })
const timestamp = z
  .union([z.date(), z.iso.datetime({ offset: true })], { error: 'must be an ISO 8601 time with a zone, e.g. 2027-06-01T00:00:00Z' })
  .transform((v) => (v instanceof Date ? v : new Date(v)))
/** `127.0.0.1`, `::1` or a CIDR range such as `10.0.0.0/8`. */
const addressOrRange = z.string({ error: 'must be a string' }).refine(
  (v) => {
    const [address = '', bits, ...rest] = v.split('/')
    const family = isIP(address)
    if (family === 0 || rest.length > 0) return false
    return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128))
  },
  { error: 'must be an IP address or a CIDR range, e.g. 127.0.0.1 or 10.0.0.0/8' },
)
const glob = z
  .string({ error: 'must be a string' })
  .regex(/^[A-Za-z0-9._/*?-]{1,128}$/, { error: 'must be a glob of letters, digits, . _ / - * ?' })

/** `branch:main` or `tag:v*.*.*`: which refs a request may deploy to an env. */
const refRule = z
  .string({ error: 'must be a string' })
  .regex(/^(branch|tag):[A-Za-z0-9._/*?-]{1,128}$/, { error: 'must be "branch:NAME" or "tag:PATTERN"' })
  .transform((v) => {
    const [kind, pattern] = v.split(/:(.*)/s) as ['branch' | 'tag', string]
    return { kind, pattern }
  })

const keySchema = z
  .strictObject({
    id: z.string({ error: 'must be a string' }).regex(KEY_ID_PATTERN, { error: `must match ${KEY_ID_PATTERN}` }),
    alg: z.enum(['ed25519', 'hmac-sha256'], { error: 'must be "ed25519" or "hmac-sha256"' }),
    publicKeyFile: filePath.optional(),
    secretFile: filePath.optional(),
    secretEnv: z
      .string()
      .regex(/^[A-Z_][A-Z0-9_]*$/, { error: 'must be an environment variable name' })
      .optional(),
    allow: z
      .strictObject({
        envs: z.array(name).optional(),
        refs: z.array(glob).optional(),
        /** May approve deploys held in AWAITING_APPROVAL (of its envs, never its own): a separate permission. */
        approve: z.boolean({ error: 'must be true or false' }).default(false),
      })
      .prefault({}),
    notBefore: timestamp.optional(),
    notAfter: timestamp.optional(),
  })
  .superRefine((key, ctx) => {
    const sources = [key.publicKeyFile, key.secretFile, key.secretEnv].filter((s) => s !== undefined).length
    if (key.alg === 'ed25519' && (key.publicKeyFile === undefined || sources !== 1)) {
      ctx.addIssue({ code: 'custom', path: ['publicKeyFile'], message: 'an ed25519 key needs publicKeyFile (and no secret)' })
    }
    if (key.alg === 'hmac-sha256' && (key.publicKeyFile !== undefined || sources !== 1)) {
      ctx.addIssue({ code: 'custom', path: ['secretFile'], message: 'an hmac-sha256 key needs exactly one of secretFile or secretEnv' })
    }
    if (key.notBefore && key.notAfter && key.notBefore >= key.notAfter) {
      ctx.addIssue({ code: 'custom', path: ['notAfter'], message: 'must be later than notBefore' })
    }
  })

const proxySchema = z.strictObject({
  upstreamFile: filePath,
  upstreamName: z
    .string()
    .regex(UPSTREAM_NAME_PATTERN, { error: `must match ${UPSTREAM_NAME_PATTERN}` })
    .optional(),
  test: command.default(['nginx', '-t']),
  reload: command.default(['nginx', '-s', 'reload']),
  /** nginx master's pid file: when set, each reload is confirmed by seeing new worker processes. */
  pidFile: filePath.optional(),
  /** How long the old release keeps running after the switch, for requests already in flight. */
  drainMs: nonNegativeInt.max(600_000, { error: 'must be ≤ 600000' }).default(1000),
  /** The env's JSON access log (`log_format deploy_agent`): the agent counts the live release's answers in it. */
  accessLog: z
    .string({ error: 'must be a string' })
    .regex(/^\/[^\0]*[^/]$/, { error: 'must be an absolute file path, e.g. /var/log/nginx/deploy-agent/shop-production.json' })
    .optional(),
})

/** `database.pitr`: WAL streamed by a supervised pg_receivewal into a slot, plus base backups (agent/pitr/). */
const pitrSchema = z.strictObject({
  enabled: z.boolean({ error: 'must be true or false' }).default(true),
  /** Default `deploy_agent_<app>_<env>` (see pitrSlot); one slot per env, never shared. */
  slot: z
    .string({ error: 'must be a string' })
    .regex(/^[a-z0-9_]{1,63}$/, { error: 'must be 1 to 63 lowercase letters, digits or _ (a replication slot name)' })
    .optional(),
  baseBackup: nonEmpty
    .refine((expr) => cron.validate(expr), { error: 'must be a cron expression (minute hour day month weekday), e.g. "0 2 * * 0"' })
    .default('0 2 * * 0'),
})

const databaseSchema = z.strictObject({
  url: z
    .string({ error: 'must be a string' })
    .refine((url) => !/^postgres(ql)?\+/.test(url), {
      error: 'must be a plain postgres:// URL (pg tools use it); set appUrlScheme for the scheme the app gets',
    })
    .regex(/^postgres(ql)?(\+[a-z0-9_]+)?:\/\/[^/]+\/[A-Za-z_][A-Za-z0-9_]{0,62}$/, {
      error: 'must be a postgres://user@host[:port]/dbname URL',
    }),
  /** The scheme of the URL the containers get; the agent's pg tools always use the plain one. */
  appUrlScheme: z
    .string({ error: 'must be a string' })
    .regex(/^postgres(ql)?(\+[a-z0-9_]+)?$/, { error: 'must be postgresql or postgres, optionally with a +driver (postgresql+asyncpg)' })
    .default('postgresql'),
  passwordFile: filePath.optional(),
  envName: z
    .string()
    .regex(/^[A-Z_][A-Z0-9_]*$/, { error: 'must be an environment variable name' })
    .default('DATABASE_URL'),
  pitr: pitrSchema.optional(),
})

/** The Linux capabilities Docker can add or drop, named as Docker names them (without CAP_). */
export const CAPABILITIES: ReadonlySet<string> = new Set([
  'AUDIT_CONTROL',
  'AUDIT_READ',
  'AUDIT_WRITE',
  'BLOCK_SUSPEND',
  'BPF',
  'CHECKPOINT_RESTORE',
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'IPC_LOCK',
  'IPC_OWNER',
  'KILL',
  'LEASE',
  'LINUX_IMMUTABLE',
  'MAC_ADMIN',
  'MAC_OVERRIDE',
  'MKNOD',
  'NET_ADMIN',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_RAW',
  'PERFMON',
  'SETFCAP',
  'SETGID',
  'SETPCAP',
  'SETUID',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_CHROOT',
  'SYS_MODULE',
  'SYS_NICE',
  'SYS_PACCT',
  'SYS_PTRACE',
  'SYS_RAWIO',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'SYSLOG',
  'WAKE_ALARM',
])
const DOCKER_MIN_MEMORY = 6 * 1024 * 1024
const SIZE_UNITS = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as const

/** `512m`, `2g`: the same binary units as `docker run --memory`, answered in bytes. */
const memorySize = z
  .string({ error: 'must be a size such as "512m" or "2g" (k, m or g: binary units)' })
  .regex(/^[1-9][0-9]{0,9}[kmg]$/i, { error: 'must be a size such as "512m" or "2g" (k, m or g: binary units)' })
  .transform((v) => Number(v.slice(0, -1)) * SIZE_UNITS[v.slice(-1).toLowerCase() as keyof typeof SIZE_UNITS])
  .refine((bytes) => bytes >= DOCKER_MIN_MEMORY, { error: "must be at least 6m (Docker's smallest memory limit)" })
// ALL may be dropped, never added: adding every capability is a privileged container in all but name.
const capDrop = z.array(
  z
    .string()
    .refine((c) => c === 'ALL' || CAPABILITIES.has(c), { error: 'must be a Linux capability name such as NET_RAW (or ALL), without CAP_' }),
  { error: 'must be a list of capability names' },
)
const capAdd = z.array(
  z
    .string()
    .refine((c) => CAPABILITIES.has(c), { error: 'must be a Linux capability name such as NET_BIND_SERVICE (ALL only in capDrop)' }),
  { error: 'must be a list of capability names' },
)
const noNewPrivileges = z.boolean({ error: 'must be true or false' })

function noCapabilityTwice(c: { capDrop?: string[]; capAdd?: string[] }, ctx: z.RefinementCtx): void {
  c.capAdd?.forEach((cap, i) => {
    if (c.capDrop?.includes(cap)) ctx.addIssue({ code: 'custom', path: ['capAdd', i], message: `${cap} is also in capDrop` })
  })
}

/** `apps.<app>.container`: what the app's containers (web and migration) may do. Shaped to fit a service later. */
const containerSchema = z
  .strictObject({
    capDrop: capDrop.default(() => [...DEFAULT_CONTAINER_SETTINGS.capDrop]),
    capAdd: capAdd.default(() => []),
    noNewPrivileges: noNewPrivileges.default(true),
    memory: memorySize.optional(),
    pids: positiveInt.optional(),
  })
  .superRefine(noCapabilityTwice)
/** `apps.<app>.envs.<env>.container`: single keys replacing the app's (a list replaces the whole list). */
const containerOverride = z
  .strictObject({
    capDrop: capDrop.optional(),
    capAdd: capAdd.optional(),
    noNewPrivileges: noNewPrivileges.optional(),
    memory: memorySize.optional(),
    pids: positiveInt.optional(),
  })
  .superRefine(noCapabilityTwice)

const portPair = z
  .tuple([port, port], { error: 'must be two port numbers [blue, green]' })
  .refine(([a, b]) => a !== b, { error: 'the two ports must differ' })

/** `registry.example.com`, `127.0.0.1:5000`, `registry.example.com:5000/team`: where the swarm's nodes pull from. */
const registryAddress = z
  .string({ error: 'must be a string' })
  .regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/, {
    error: 'must be a registry address such as registry.example.com:5000 (host[:port][/path], no scheme, no tag)',
  })
/** A Swarm placement constraint: `node.labels.app==lifeos`, `node.role!=manager`. */
const placementConstraint = z
  .string({ error: 'must be a string' })
  .regex(/^[A-Za-z0-9_.-]+\s*(==|!=)\s*[^\s]+$/, { error: 'must be a constraint such as node.labels.app==lifeos (== or !=)' })

/** Registry credentials: a user and the file holding its password (read at each use, never in the config). */
const registryAuthSchema = z.strictObject(
  { username: nonEmpty, passwordFile: filePath },
  { error: 'must be { username, passwordFile } (the password in a file of its own)' },
)

/** `envs.<env>.swarm`: where and how many when the env's runtime is a swarm. */
const swarmSchema = z.strictObject({
  /** Tasks per web service (at most one per node: they share the node's port). */
  replicas: positiveInt.default(2),
  /** The registry the agent pushes each release to and every node pulls from. */
  registry: registryAddress,
  /** Credentials for the push, also handed to the swarm so that every node can pull. */
  registryAuth: registryAuthSchema.optional(),
  constraints: z.array(placementConstraint, { error: 'must be a list of constraints' }).default([]),
})

const PORTS_MESSAGE = 'must be two port numbers [blue, green] (with services: a map of web service → [blue, green])'

const envSchema = z.strictObject({
  ref: refRule,
  requireApproval: z.boolean({ error: 'must be true or false' }).default(false),
  backupBeforeDeploy: z.boolean({ error: 'must be true or false' }).default(false),
  /** A request while a deploy runs: `replace` queues it (a newer one replaces an older waiting one), `reject` answers 409. */
  queue: z.enum(['replace', 'reject'], { error: 'must be "replace" or "reject"' }).default('replace'),
  /** `[blue, green]`; with `services`, one such pair per web service: `{ api: [a, b], frontend: [c, d] }`. None for workers only. */
  ports: z
    .union([portPair, z.record(name, portPair)], {
      error: PORTS_MESSAGE,
    })
    .optional(),
  envFile: filePath.optional(),
  database: databaseSchema.optional(),
  files: z.array(filePath).default([]),
  proxy: proxySchema.optional(),
  container: containerOverride.optional(),
  /** Replaces the app's whole `volumes` list for this env. */
  volumes: volumesSchema.optional(),
  /** `docker`: containers on this host; `swarm`: services on the swarm this host manages. */
  runtime: z.enum(['docker', 'swarm'], { error: 'must be "docker" or "swarm"' }).default('docker'),
  swarm: swarmSchema.optional(),
})

/** The CPU weight of a build or migration against 1024 for a serving container (Docker's limits: 2 to 262144). */
const cpuShares = z
  .number({ error: 'must be a number' })
  .int({ error: 'must be a whole number' })
  .min(2, { error: 'must be ≥ 2' })
  .max(262144, { error: 'must be ≤ 262144' })
  .default(BACKGROUND_CPU_SHARES)

const urlPath = z.string({ error: 'must be a string' }).regex(/^\/[^\s]*$/, { error: 'must be a path starting with /' })
const smokeSchema = z.array(
  z.strictObject({
    path: urlPath,
    expectStatus: z.number().int().min(100).max(599).default(200),
  }),
)

/** How an image is built from the repository (the app's, or a service's own). */
const buildSchema = z.strictObject({
  context: nonEmpty
    .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), { error: 'must be a path inside the repository' })
    .default('.'),
  dockerfile: nonEmpty.default('Dockerfile'),
  args: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string({ error: 'must be a string' })).default({}),
  timeoutSec: positiveInt.default(900),
  cpuShares,
})

/** `apps.<app>.services.<name>`: unset checks default to the app's (key by key). */
const serviceSchema = z
  .strictObject({
    kind: z.enum(['web', 'worker'], { error: 'must be "web" or "worker"' }),
    /** The container's command (argument array); default: the image's CMD. */
    command: command.optional(),
    /** The service's own image, `<app>-<service>:<env>-<release>`; default: the app's image. */
    build: buildSchema.optional(),
    // A second pulled image would need a tag and a digest pin of its own in every request: a release is one image.
    image: z
      .never({
        error:
          "is not supported: every service of a release runs the app's image (an image app's tag, pinned by one digest; a repo app's build or the service's own build); give the service its own command",
      })
      .optional(),
    health: z
      .strictObject({
        path: urlPath.optional(),
        intervalMs: positiveInt.optional(),
        timeoutMs: positiveInt.optional(),
        healthyAfter: positiveInt.optional(),
        deadlineSec: positiveInt.optional(),
        /** Workers without a Docker HEALTHCHECK: healthy once running, not restarting, this long. */
        startSec: positiveInt.max(600, { error: 'must be ≤ 600' }).optional(),
      })
      .optional(),
    smoke: smokeSchema.optional(),
    observe: z
      .strictObject({ seconds: nonNegativeInt.optional(), intervalMs: positiveInt.optional(), maxFailures: nonNegativeInt.optional() })
      .optional(),
    /** Workers: `start-first` (new one healthy before the old one stops) or `stop-first` (never two at once). */
    order: z.enum(['start-first', 'stop-first'], { error: 'must be "start-first" or "stop-first"' }).optional(),
    /** SIGTERM, then SIGKILL after this many seconds. */
    stopTimeoutSec: positiveInt.max(3600, { error: 'must be ≤ 3600' }).default(10),
    /** What this service mounts, in every env: replaces the app's (and an env's) `volumes` for it. */
    volumes: volumesSchema.optional(),
  })
  .superRefine((service, ctx) => {
    if (service.kind === 'web' && service.order !== undefined)
      ctx.addIssue({ code: 'custom', path: ['order'], message: 'only workers have an order (web services switch with nginx)' })
    if (service.kind === 'worker') {
      if (service.smoke !== undefined) ctx.addIssue({ code: 'custom', path: ['smoke'], message: 'a worker has no port to smoke-test' })
      if (service.health?.path !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['health', 'path'],
          message: 'a worker has no port to probe (healthy = HEALTHCHECK or startSec)',
        })
    }
  })

const DEFAULT_BUILD = { context: '.', dockerfile: 'Dockerfile', args: {}, timeoutSec: 900, cpuShares: BACKGROUND_CPU_SHARES }

/**
 * `registry.example.com/lifeos/api`, `127.0.0.1:5000/api`, `lifeos/api`: an image name as Docker's reference
 * grammar spells it, without a tag or digest (a deploy names the tag).
 */
export const IMAGE_NAME =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/

const imageName = z
  .string({ error: 'must be a string' })
  .max(255, { error: 'must be at most 255 characters' })
  .superRefine((v, ctx) => {
    const tagged = v.includes('@') || (v.split('/').pop() ?? '').includes(':')
    if (tagged)
      ctx.addIssue({ code: 'custom', message: 'must be an image name without a tag or digest (a deploy names the tag as its ref)' })
    else if (!IMAGE_NAME.test(v))
      ctx.addIssue({ code: 'custom', message: 'must be an image name such as registry.example.com/team/api (lower-case path)' })
  })

const appSchema = z
  .strictObject({
    repo: nonEmpty
      .refine((r) => !/^(ext|fd)::/.test(r) && !r.startsWith('-'), {
        error: 'must be a git URL or path (no ext:: or fd:: transports)',
      })
      .optional(),
    /** A prebuilt image pulled from a registry, instead of `repo` + `build`. */
    image: imageName.optional(),
    /** Credentials for pulling `image`; the password file is read at each pull. */
    registryAuth: registryAuthSchema.optional(),
    /** The longest a pull of `image` may take. */
    pullTimeoutSec: positiveInt.default(600),
    build: buildSchema.default(DEFAULT_BUILD),
    migrate: z.strictObject({ command, timeoutSec: positiveInt.default(300), cpuShares }).optional(),
    health: z
      .strictObject({
        path: urlPath.default('/healthz'),
        intervalMs: positiveInt.default(500),
        timeoutMs: positiveInt.default(2000),
        healthyAfter: positiveInt.default(2),
        deadlineSec: positiveInt.default(60),
      })
      .default({ path: '/healthz', intervalMs: 500, timeoutMs: 2000, healthyAfter: 2, deadlineSec: 60 }),
    smoke: smokeSchema.default([]),
    observe: z
      .strictObject({
        seconds: nonNegativeInt.default(30),
        intervalMs: positiveInt.default(1000),
        maxFailures: nonNegativeInt.default(3),
        /** With proxy.accessLog: the share of 5xx and upstream errors, in a 2 s window, above which the release rolls back. */
        maxErrorRate: z
          .number({ error: 'must be a number' })
          .min(0, { error: 'must be ≥ 0' })
          .max(1, { error: 'must be ≤ 1' })
          .default(0.05),
        /** The fewest answers in that window the rate is judged on. */
        minRequests: positiveInt.default(20),
        /** The replaced release keeps running (nginx's backup) until the window ends: a rollback in it is one switch. */
        warmStandby: z.boolean({ error: 'must be true or false' }).default(true),
        /** Notifications about the live release's traffic after OBSERVING (needs proxy.accessLog). */
        alert: z
          .strictObject({
            errorsPerMinute: positiveInt.optional(),
            downMinutes: positiveInt.optional(),
          })
          .optional(),
      })
      .default({ seconds: 30, intervalMs: 1000, maxFailures: 3, maxErrorRate: 0.05, minRequests: 20, warmStandby: true }),
    /** Several containers per release (web services with their own ports, workers); without it: one web service. */
    services: z.record(name, serviceSchema, { error: 'must be a map of service name → service' }).optional(),
    container: containerSchema.default(() => ({
      ...DEFAULT_CONTAINER_SETTINGS,
      capDrop: [...DEFAULT_CONTAINER_SETTINGS.capDrop],
      capAdd: [],
    })),
    volumes: volumesSchema.default([]),
    /** A bind of the Docker socket or a directory holding it (root on the host) is refused unless this is true. */
    allowDockerSocket: z.boolean({ error: 'must be true or false' }).default(false),
    keepReleases: positiveInt.max(100, { error: 'must be ≤ 100' }).default(5),
    envs: z.record(name, envSchema, { error: 'must be a map of env name → env' }),
  })
  .superRefine((app, ctx) => {
    if ((app.repo === undefined) === (app.image === undefined)) {
      const message = 'needs exactly one of repo (built from git) or image (pulled from a registry)'
      ctx.addIssue({ code: 'custom', path: [app.repo === undefined ? 'repo' : 'image'], message })
    }
    if (app.image === undefined) {
      if (app.registryAuth) ctx.addIssue({ code: 'custom', path: ['registryAuth'], message: 'is only for an app with image' })
      return
    }
    // build has defaults, so only settings other than those can tell that someone meant to build.
    if (JSON.stringify(app.build) !== JSON.stringify(DEFAULT_BUILD))
      ctx.addIssue({ code: 'custom', path: ['build'], message: 'is only for an app with repo: an image app is built by its CI' })
    for (const [serviceName, service] of Object.entries(app.services ?? {}))
      if (service.build)
        ctx.addIssue({
          code: 'custom',
          path: ['services', serviceName, 'build'],
          message: 'is only for an app with repo: an image app is built by its CI',
        })
    for (const [envName, env] of Object.entries(app.envs)) {
      // An image has tags, not branches: the deploy's ref is the tag to pull.
      if (env.ref.kind === 'branch')
        ctx.addIssue({
          code: 'custom',
          path: ['envs', envName, 'ref'],
          message: 'an image app deploys image tags: use "tag:PATTERN" (e.g. "tag:v*" or "tag:main-*"), not a branch',
        })
    }
  })

const notifySchema = z.strictObject({
  kind: z.enum(['slack', 'discord', 'webhook'], { error: 'must be "slack", "discord" or "webhook"' }),
  url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  secretFile: filePath.optional(),
})

const retentionDefaults = { days: 30, minKeep: 7, weekly: 8, monthly: 6 }

export const configSchema = z
  .strictObject({
    listen: z
      .strictObject({
        host: nonEmpty.default('127.0.0.1'),
        port: port.default(8787),
        tls: z.strictObject({ cert: filePath, key: filePath }).optional(),
        /** Proxies over TCP whose X-Forwarded-For is logged; never used by the limiter (any local process can send it). */
        trustProxy: z.array(addressOrRange, { error: 'must be a list of IP addresses or CIDR ranges' }).optional(),
        /** A unix socket (mode 0660) for the local nginx, the one place X-Forwarded-For names the client. */
        socket: z
          .string({ error: 'must be a string' })
          .regex(/^\/[^\0]*[^/]$/, { error: 'must be an absolute file path, e.g. /run/deploy-agent/agent.sock' })
          .max(100, { error: 'must be at most 100 bytes (the limit of a unix socket path)' })
          .optional(),
      })
      .default({ host: '127.0.0.1', port: 8787 }),
    stateDir: nonEmpty.default('./.deploy-agent'),
    audience: z.string({ error: 'is required: the host name CI signs into every request' }).regex(/^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$/, {
      error: 'must be a host name',
    }),
    keys: z.array(keySchema, { error: 'must be a list of keys' }).default([]),
    statusToken: z
      .strictObject({
        file: filePath.optional(),
        env: z
          .string()
          .regex(/^[A-Z_][A-Z0-9_]*$/)
          .optional(),
      })
      .refine((t) => (t.file === undefined) !== (t.env === undefined), { error: 'needs exactly one of file or env' })
      .optional(),
    apps: z.record(name, appSchema, { error: 'must be a map of app name → app' }).default({}),
    backups: z
      .strictObject({
        dir: nonEmpty.optional(),
        schedule: nonEmpty
          .refine((expr) => cron.validate(expr), { error: 'must be a cron expression (minute hour day month weekday), e.g. "0 3 * * *"' })
          .default('0 3 * * *'),
        retention: z
          .strictObject({
            days: positiveInt.default(30),
            minKeep: positiveInt.default(7),
            weekly: nonNegativeInt.default(8),
            monthly: nonNegativeInt.default(6),
          })
          .default(retentionDefaults),
        verify: z.enum(['none', 'full', 'restore'], { error: 'must be "none", "full" or "restore"' }).default('full'),
      })
      .default({ schedule: '0 3 * * *', retention: retentionDefaults, verify: 'full' }),
    notify: z.array(notifySchema).default([]),
    sentry: z.strictObject({ dsn: z.url({ error: 'must be a URL' }), environment: z.string().optional() }).optional(),
  })
  .superRefine((config, ctx) => {
    const owners = new Map<number, string>()
    const slots = new Map<string, string>()
    const keyIds = new Set<string>()
    config.keys.forEach((key, i) => {
      if (keyIds.has(key.id)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'id'], message: `duplicate key id "${key.id}"` })
      keyIds.add(key.id)
    })
    for (const [appName, app] of Object.entries(config.apps)) {
      const webServices = app.services && Object.keys(app.services).filter((s) => app.services?.[s]?.kind === 'web')
      // An app of workers only has nothing to route: no ports, no nginx, no smoke checks.
      const workerOnly = webServices?.length === 0
      if (workerOnly && app.smoke.length > 0)
        ctx.addIssue({ code: 'custom', path: ['apps', appName, 'smoke'], message: 'a worker-only app has no port to smoke-test' })
      for (const { index, message } of dockerSocketProblems(app.volumes, app.allowDockerSocket))
        ctx.addIssue({ code: 'custom', path: ['apps', appName, 'volumes', index], message })
      for (const [serviceName, service] of Object.entries(app.services ?? {}))
        for (const { index, message } of dockerSocketProblems(service.volumes ?? [], app.allowDockerSocket))
          ctx.addIssue({ code: 'custom', path: ['apps', appName, 'services', serviceName, 'volumes', index], message })
      for (const [envName, env] of Object.entries(app.envs)) {
        for (const { index, message } of dockerSocketProblems(env.volumes ?? [], app.allowDockerSocket))
          ctx.addIssue({ code: 'custom', path: ['apps', appName, 'envs', envName, 'volumes', index], message })
        const envKey = ['apps', appName, 'envs', envName]
        if (env.runtime === 'swarm' && !env.swarm)
          ctx.addIssue({ code: 'custom', path: [...envKey, 'swarm'], message: 'is required with runtime: swarm (at least { registry })' })
        if (env.runtime !== 'swarm' && env.swarm)
          ctx.addIssue({ code: 'custom', path: [...envKey, 'swarm'], message: 'is only for runtime: swarm' })
        if (env.runtime === 'swarm' && workerOnly)
          ctx.addIssue({ code: 'custom', path: [...envKey, 'runtime'], message: 'an app of workers only cannot run on a swarm yet' })
        if (env.runtime === 'swarm' && (env.volumes ?? app.volumes).length > 0)
          ctx.addIssue({
            code: 'custom',
            path: [...envKey, 'runtime'],
            message: 'swarm envs cannot mount volumes yet (a host path would have to exist on every node)',
          })
        const envPath = ['apps', appName, 'envs', envName, 'ports']
        const pairs: Array<[(string | number)[], [number, number]]> = []
        if (workerOnly) {
          if (env.ports !== undefined)
            ctx.addIssue({ code: 'custom', path: envPath, message: 'a worker-only app has no ports (its services are all workers)' })
          if (env.proxy !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: ['apps', appName, 'envs', envName, 'proxy'],
              message: 'a worker-only app has nothing for nginx to route (its services are all workers)',
            })
        } else if (env.ports === undefined) {
          ctx.addIssue({ code: 'custom', path: envPath, message: PORTS_MESSAGE })
        } else if (Array.isArray(env.ports)) {
          if (webServices)
            ctx.addIssue({
              code: 'custom',
              path: envPath,
              message: `must be a map of web service → [blue, green] (${webServices.join(', ')})`,
            })
          else pairs.push([envPath, env.ports])
        } else if (!webServices) {
          ctx.addIssue({ code: 'custom', path: envPath, message: 'must be two port numbers [blue, green] (a map only with services)' })
        } else {
          for (const service of webServices)
            if (!Object.hasOwn(env.ports, service))
              ctx.addIssue({ code: 'custom', path: envPath, message: `needs a [blue, green] pair for web service ${service}` })
          for (const [service, pair] of Object.entries(env.ports)) {
            if (webServices.includes(service)) pairs.push([[...envPath, service], pair])
            else
              ctx.addIssue({
                code: 'custom',
                path: [...envPath, service],
                message: app.services?.[service] ? 'a worker has no ports' : `names no web service (${webServices.join(', ')})`,
              })
          }
        }
        for (const [pairPath, pair] of pairs)
          pair.forEach((p, i) => {
            if (i === 1 && p === pair[0]) return // reported by the pair's own rule
            const owner = owners.get(p)
            const path = [...pairPath, i]
            if (owner) ctx.addIssue({ code: 'custom', path, message: `port ${p} is already used by ${owner}` })
            else if (p === config.listen.port) ctx.addIssue({ code: 'custom', path, message: `port ${p} is the agent's own listen port` })
            owners.set(p, pairPath.length > envPath.length ? `${appName}/${envName}/${String(pairPath.at(-1))}` : `${appName}/${envName}`)
          })
        const pitr = env.database?.pitr
        if (pitr?.enabled) {
          const slot = pitrSlotName(appName, envName, pitr.slot)
          const owner = slots.get(slot)
          const path = ['apps', appName, 'envs', envName, 'database', 'pitr', 'slot']
          if (owner) ctx.addIssue({ code: 'custom', path, message: `slot "${slot}" is already used by ${owner}` })
          slots.set(slot, `${appName}/${envName}`)
        }
        if (env.backupBeforeDeploy && !env.database) {
          ctx.addIssue({
            code: 'custom',
            path: ['apps', appName, 'envs', envName, 'backupBeforeDeploy'],
            message: 'needs a database to back up',
          })
        }
      }
    }
  })

/** The replication slot of an env's PITR: the configured one, else `deploy_agent_<app>_<env>` (`-` → `_`). */
export function pitrSlotName(app: string, env: string, slot: string | undefined): string {
  return slot ?? `deploy_agent_${app}_${env}`.replace(/-/g, '_').slice(0, 63)
}

export type Config = z.output<typeof configSchema>
export type KeyConfig = Config['keys'][number]
export type AppConfig = Config['apps'][string]
export type EnvConfig = AppConfig['envs'][string]
export type RefRule = EnvConfig['ref']
