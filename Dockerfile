# deploy-agent as a container. Run with host networking and the Docker socket, e.g.:
#   docker run -d --name deploy-agent --init --network host \
#     --group-add "$(stat -c %g /var/run/docker.sock)" -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /etc/deploy-agent:/etc/deploy-agent:ro -v /var/lib/deploy-agent:/var/lib/deploy-agent \
#     -v /var/backups/deploy-agent:/var/backups/deploy-agent deploy-agent
ARG BASE=node:20-bookworm-slim

# Production dependencies only; tsx is a runtime dependency (the CLI runs the TypeScript through it).
FROM ${BASE} AS deps
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM ${BASE}
# git: fetch + archive of app repos; postgresql-client: pg_dump/pg_restore (15, as in bookworm).
# Run with --init so the children the agent spawns are reaped.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      git postgresql-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 deploy-agent \
 && useradd --system --uid 10001 --gid deploy-agent --home-dir /var/lib/deploy-agent --shell /usr/sbin/nologin deploy-agent \
 && install -d -o deploy-agent -g deploy-agent -m 0750 \
      /var/lib/deploy-agent /var/backups/deploy-agent /etc/nginx/deploy-agent

WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY agent ./agent

USER deploy-agent
VOLUME ["/var/lib/deploy-agent", "/var/backups/deploy-agent"]
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8787/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/deploy-agent.js"]
CMD ["serve", "--config", "/etc/deploy-agent/agent.yaml"]
