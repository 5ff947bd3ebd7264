# Shared by scripts/test and scripts/bench: the Python tools and a moto_server on loopback.
# Source it from the repository root; it sets `venv`, `log_dir` and the AWS environment.

venv=${HUB_VENV:-$PWD/.venv}
log_dir=$(mktemp -d)

step() { printf '\n==> %s\n' "$*"; }

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Installs scripts/requirements-test.txt into the venv (created if missing).
ensure_python_tools() {
  step "Python tools (moto, cfn-lint, sam, schemathesis, playwright) in $venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
}

# Installs Debian package $2 if command $1 is missing.
ensure_debian() {
  if ! command -v "$1" >/dev/null 2>&1; then
    step "$2 (Debian package)"
    if ! apt-get install -y -q "$2" >/dev/null 2>&1; then
      apt-get update -q >/dev/null 2>&1
      apt-get install -y -q "$2" >/dev/null
    fi
  fi
}

# Installs wrk from Debian's packages if it is missing.
ensure_wrk() {
  ensure_debian wrk wrk
}

# Installs Debian's Chromium (the portal's browser tests drive it with Playwright; Playwright's
# own browser download needs the internet).
ensure_chromium() {
  ensure_debian chromium chromium
}

# Starts moto_server on a free loopback port, exports the AWS environment pointing at it, and
# stops it (and anything in `extra_pids`) on exit.
start_moto() {
  step "moto_server on loopback"
  local port
  port=$(free_port)
  # moto with its SQS delete/send race mended (scripts/moto_server.py says which).
  "$venv/bin/python" scripts/moto_server.py -H 127.0.0.1 -p "$port" >"$log_dir/moto.log" 2>&1 &
  moto_pid=$!
  trap 'for p in ${extra_pids:-} $moto_pid; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$log_dir"' EXIT
  for _ in $(seq 1 100); do
    if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then break; fi
    sleep 0.2
  done
  export SAM_CLI_TELEMETRY=0
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
}
