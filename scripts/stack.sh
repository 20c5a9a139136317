#!/usr/bin/env bash
# The local stack: LocalStack (S3 + SQS, host mode) and Redis from infra/redis/redis.conf,
# plus, on request, the pipeline's workers and listener. Every process is started here with
# its pid recorded under run/, and stopped by that pid.
#
#   scripts/stack.sh services      start LocalStack and Redis when they do not answer; print
#                                  the names of those started
#   scripts/stack.sh app           start workers, the listener and beat (periodic rollups)
#   scripts/stack.sh stop NAME...  stop the named processes (localstack redis worker-* listener beat)
#   scripts/stack.sh down          stop everything this script started
#   scripts/stack.sh status
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run="$root/run"
mkdir -p "$run"
venv="$root/.venv"
ls_port=4566
redis_port=6390
secrets="$run/shelf.env"  # SHELF_REDIS__URL with the generated password (mode 600)
acl="$run/redis/users.acl"

log() { echo "[stack] $*" >&2; }

# A recorded pid is ours while it runs our supervisor of that name: after a reboot, or a
# supervisor killed without its pid file removed, the pid may be another program's, which
# is neither left in place of ours nor stopped.
ours() {  # pid, name
  [ -d /proc ] || return 0
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "supervise --name $2 -- "
}

alive() {
  [ -f "$run/$1.pid" ] || return 1
  local pid; pid="$(cat "$run/$1.pid")"
  kill -0 "$pid" 2>/dev/null && ours "$pid" "$1"
}

localstack_ok() {
  local health
  health="$(curl -fsS -m 2 "http://127.0.0.1:$ls_port/_localstack/health" 2>/dev/null)" || return 1
  grep -q '"s3": "\(available\|running\)"' <<<"$health" &&
    grep -q '"sqs": "\(available\|running\)"' <<<"$health"
}

# The Redis password: from SHELF_REDIS__URL when set, else generated once into run/.
redis_url() {
  if [ -n "${SHELF_REDIS__URL:-}" ]; then echo "$SHELF_REDIS__URL"; return; fi
  [ -f "$secrets" ] && sed -n 's/^SHELF_REDIS__URL=//p' "$secrets"
}

ensure_redis_secret() {
  [ -n "$(redis_url)" ] && return 0
  local pass
  pass="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  (umask 077 && printf 'SHELF_REDIS__URL=redis://pipeline:%s@127.0.0.1:%s/1\n' "$pass" "$redis_port" >"$secrets")
  log "generated a Redis password into $secrets"
}

redis_pass() { redis_url | sed -n 's|^redis://[^:]*:\([^@]*\)@.*|\1|p'; }

redis_ok() {
  local pass; pass="$(redis_pass)"
  [ -n "$pass" ] || return 1
  REDISCLI_AUTH="$pass" redis-cli -p "$redis_port" --user pipeline ping 2>/dev/null | grep -q PONG
}

# Every long-running process (LocalStack, Redis, workers, listener, beat) runs under
# `shelf supervise`, which restarts it when it exits (with backoff) and records restarts for
# `shelf status`; the supervisor's pid is recorded, and stopping it stops its child.
supervised() {  # name, command...
  local name=$1; shift
  if ! alive "$name"; then
    nohup "$venv/bin/shelf" supervise --name "$name" -- "$@" >>"$run/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
  fi
}

wait_for() {  # name, check function, seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if $2; then return 0; fi
    if [ -f "$run/$1.pid" ] && ! kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; then
      log "$1 exited during start; see $run/$1.log"; tail -n 20 "$run/$1.log" >&2 || true; return 1
    fi
    sleep 0.1
  done
  log "$1 did not become ready in $3 s; see $run/$1.log"; return 1
}

start_localstack() {
  bash "$root/localstack/install.sh"
  mkdir -p "$run/localstack-volume"
  supervised localstack env -C "$run" GATEWAY_LISTEN=127.0.0.1:$ls_port SERVICES=s3,sqs \
    DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 S3_SKIP_SIGNATURE_VALIDATION=0 PERSISTENCE=0 \
    LOCALSTACK_VOLUME_DIR="$run/localstack-volume" \
    "$root/localstack/.venv/bin/python" -m localstack.runtime.main
  wait_for localstack localstack_ok 90
}

start_redis() {
  command -v redis-server >/dev/null || { log "redis-server not installed (apt-get install redis-server)"; return 1; }
  mkdir -p "$run/redis"
  ensure_redis_secret
  # Least privilege for the pipeline: no admin or dangerous commands (FLUSHALL, CONFIG,
  # DEBUG, SHUTDOWN, KEYS, MONITOR...), INFO allowed for status views.
  (umask 077 && printf 'user default off\nuser pipeline on >%s ~* &* +@all -@admin -@dangerous +info\n' \
    "$(redis_pass)" >"$acl")
  supervised redis redis-server "$root/infra/redis/redis.conf" --daemonize no \
    --dir "$run/redis" --aclfile "$acl" --logfile "$run/redis-server.log"
  wait_for redis redis_ok 20
}

services() {
  local started=()
  ensure_redis_secret
  if localstack_ok; then log "LocalStack answers on :$ls_port"; else start_localstack; started+=(localstack); fi
  if redis_ok; then log "Redis answers on :$redis_port"; else start_redis; started+=(redis); fi
  "$venv/bin/shelf" provision >&2
  echo "${started[@]:-}"
}

app() {
  local n started=()
  for n in worker-cpu worker-inference listener beat metrics; do alive "$n" || started+=("$n"); done
  # Metric files of processes from an earlier run are not this run's.
  alive worker-cpu || alive worker-inference || rm -rf "$run/metrics"
  mkdir -p "$run/metrics"
  export PROMETHEUS_MULTIPROC_DIR="$run/metrics"
  supervised metrics "$venv/bin/shelf" metrics
  if [ "${FLOWER:-0}" = "1" ]; then
    "$venv/bin/python" -c "import flower" 2>/dev/null || "$venv/bin/pip" install -q 'flower>=2.0,<3'
    alive flower || started+=(flower)
    supervised flower "$venv/bin/celery" -A pipeline.tasks.app:app flower \
      --address=127.0.0.1 --port=5555
  fi
  for n in cpu inference; do supervised "worker-$n" "$venv/bin/shelf" worker --pool "$n"; done
  supervised listener "$venv/bin/shelf" listen
  supervised beat "$venv/bin/shelf" beat
  for n in cpu inference; do
    for ((i = 0; i < 600; i++)); do grep -q 'ready\.' "$run/worker-$n.log" 2>/dev/null && break; sleep 0.1; done
  done
  log "workers and listener running (logs in $run)"
  echo "${started[@]:-}"
}

stop() {
  local name pid i
  for name in "$@"; do
    [ -f "$run/$name.pid" ] || continue
    pid="$(cat "$run/$name.pid")"
    if alive "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && ours "$pid" "$name" && { log "$name did not stop in 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
      log "stopped $name ($pid)"
    elif kill -0 "$pid" 2>/dev/null; then
      log "$name: pid $pid is not its supervisor (a stale pid file): left alone"
    fi
    rm -f "$run/$name.pid"
  done
}

case "${1:-}" in
  services) services ;;
  app) app ;;
  stop) shift; stop "$@" ;;
  down) stop flower metrics beat listener worker-cpu worker-inference redis localstack ;;
  status)
    for n in localstack redis worker-cpu worker-inference listener beat metrics flower; do
      if alive "$n"; then echo "$n running (pid $(cat "$run/$n.pid"))"; else echo "$n not started here"; fi
    done ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
