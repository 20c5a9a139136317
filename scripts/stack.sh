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
redis_pass=pipeline-local

log() { echo "[stack] $*" >&2; }

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

localstack_ok() {
  local health
  health="$(curl -fsS -m 2 "http://127.0.0.1:$ls_port/_localstack/health" 2>/dev/null)" || return 1
  grep -q '"s3": "\(available\|running\)"' <<<"$health" &&
    grep -q '"sqs": "\(available\|running\)"' <<<"$health"
}

redis_ok() { redis-cli -p "$redis_port" --user pipeline --pass "$redis_pass" --no-auth-warning ping 2>/dev/null | grep -q PONG; }

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
  # exec: the recorded pid is LocalStack's own, so stopping by pid stops it.
  (cd "$run" && exec env GATEWAY_LISTEN=127.0.0.1:$ls_port SERVICES=s3,sqs DISABLE_EVENTS=1 \
     SKIP_SSL_CERT_DOWNLOAD=1 S3_SKIP_SIGNATURE_VALIDATION=0 PERSISTENCE=0 \
     LOCALSTACK_VOLUME_DIR="$run/localstack-volume" \
     "$root/localstack/.venv/bin/python" -m localstack.runtime.main) \
    >"$run/localstack.log" 2>&1 </dev/null &
  echo $! >"$run/localstack.pid"
  wait_for localstack localstack_ok 90
}

start_redis() {
  command -v redis-server >/dev/null || { log "redis-server not installed (apt-get install redis-server)"; return 1; }
  mkdir -p "$run/redis"
  redis-server "$root/infra/redis/redis.conf" --dir "$run/redis" \
    --logfile "$run/redis.log" --pidfile "$run/redis.pid"
  wait_for redis redis_ok 20
}

services() {
  local started=()
  if localstack_ok; then log "LocalStack answers on :$ls_port"; else start_localstack; started+=(localstack); fi
  if redis_ok; then log "Redis answers on :$redis_port"; else start_redis; started+=(redis); fi
  "$venv/bin/shelf" provision >&2
  echo "${started[@]:-}"
}

app() {
  local n started=()
  for n in cpu gpu; do
    if ! alive "worker-$n"; then
      nohup "$venv/bin/shelf" worker --pool "$n" >"$run/worker-$n.log" 2>&1 &
      echo $! >"$run/worker-$n.pid"; started+=("worker-$n")
    fi
  done
  if ! alive listener; then
    nohup "$venv/bin/shelf" listen >"$run/listener.log" 2>&1 &
    echo $! >"$run/listener.pid"; started+=(listener)
  fi
  if ! alive beat; then
    nohup "$venv/bin/shelf" beat >"$run/beat.log" 2>&1 &
    echo $! >"$run/beat.pid"; started+=(beat)
  fi
  for n in cpu gpu; do
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
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
      log "stopped $name ($pid)"
    fi
    rm -f "$run/$name.pid"
  done
}

case "${1:-}" in
  services) services ;;
  app) app ;;
  stop) shift; stop "$@" ;;
  down) stop beat listener worker-cpu worker-gpu redis localstack ;;
  status)
    for n in localstack redis worker-cpu worker-gpu listener beat; do
      if alive "$n"; then echo "$n running (pid $(cat "$run/$n.pid"))"; else echo "$n not started here"; fi
    done ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
