#!/usr/bin/env bash
# Installs LocalStack (host mode, no Docker) into localstack/.venv from the lock file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$here/requirements.lock" ]; then exit 0; fi

find_python() {
  for cand in "${LOCALSTACK_PYTHON:-}" python3.13 "$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python" \
              /usr/bin/python3.13 /usr/local/bin/python3.13; do
    [ -n "$cand" ] || continue
    if "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' 2>/dev/null; then
      command -v "$cand" 2>/dev/null || echo "$cand"; return 0
    fi
  done
  if command -v pyenv >/dev/null; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.|$)'); do
      echo "$(pyenv root)/versions/$v/bin/python"; return 0
    done
  fi
  return 1
}

py="$(find_python)" || {
  echo "LocalStack needs Python 3.13 (set LOCALSTACK_PYTHON to its interpreter)." >&2
  exit 1
}
echo "installing LocalStack with $py into $venv" >&2  # stdout names what was started
rm -rf "$venv"
"$py" -m venv "$venv"
log="$venv/install.log"
if ! { "$venv/bin/pip" install -q --upgrade pip &&
       "$venv/bin/pip" install -q --no-deps -r "$here/requirements.lock"; } >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" | tail -n 30 >&2
  echo "LocalStack install failed (full log: $log)" >&2
  exit 1
fi
"$venv/bin/python" -c 'import localstack.runtime.main' 
touch "$stamp"
