#!/usr/bin/env bash
# Roll the fleet back to dry run (the seed's PHASE 6, made real and safe):
#   1. `quantum dry-run on`: instant and fleet-wide; the executor refuses every plan with reason dry_run
#   2. with the systemd units installed: APPLY_MODE=dry_run persisted in /etc/quantum/common.env
#      (mode 0600) and the executor and apply layer restarted, so a restart cannot undo step 1
#   3. verify: one test plan must end executed=false reason=dry_run, and no result written since
#      the rollback began may say executed=true. The test plan is an open: if dry run does not hold it
#      executes, and is closed again at once; on a mainnet fleet it is sent only with --mainnet
# --undo lifts the runtime switch only, and says what to edit for the env file.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: rollback_to_dry_run.sh [--undo] [--env-dir DIR] [--persist] [--no-restart]
                              [--symbol SYM] [--side BUY|SELL] [--qty QTY] [--timeout S] [--mainnet]
                              [--host HOST [-p PORT] [-i KEY] [-o SSH_OPTION]... [--remote-python PY] [--env NAME[=VALUE]]...]
  --undo          lift the runtime switch (quantum dry-run off); the env file is left alone
  --env-dir DIR   the fleet's env files (default /etc/quantum)
  --persist       write APPLY_MODE=dry_run even when no systemd units are installed
  --no-restart    do not restart the units after persisting
  --symbol/--side/--qty  the verification plan: an open on a symbol without a position
                  (default TRXUSDT BUY 100); it must pass both permits to reach the dry-run check
  --timeout S     seconds to wait for the verification result (default 30, covers a restart)
  --mainnet       on a mainnet fleet, send the verification plan too (a real open if dry run does not hold,
                  closed again at once); without it only the results are checked there
  --host HOST     run on HOST over ssh (ops/remote_run.py)
USAGE
}

# shellcheck source-path=SCRIPTDIR source=lib/ops.sh
declare -F ops_lib_loaded >/dev/null || . "$(dirname "$0")/lib/ops.sh"
ops_maybe_remote "$0" "$@"

RESTARTED_UNITS=(quantum-intent-executor quantum-apply-layer)
undo=0 env_dir=/etc/quantum persist=0 restart=1 symbol=TRXUSDT side=BUY qty=100 timeout=30 mainnet=0
while [ $# -gt 0 ]; do
  case $1 in
    --undo) undo=1; shift ;;
    --env-dir) env_dir=$2; shift 2 ;;
    --persist) persist=1; shift ;;
    --no-restart) restart=0; shift ;;
    --symbol) symbol=${2^^}; shift 2 ;;
    --side) side=${2^^}; shift 2 ;;
    --qty) qty=$2; shift 2 ;;
    --timeout) ops_whole_seconds --timeout "${2:-}"; timeout=$2; shift 2 ;;
    --mainnet) mainnet=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
case $side in BUY|SELL) ;; *) usage >&2; exit 2 ;; esac

units_installed() {
  command -v systemctl >/dev/null 2>&1 &&
    systemctl list-unit-files quantum-intent-executor.service 2>/dev/null | grep -q '^quantum-intent-executor\.service'
}

# The active APPLY_MODE line of env file $1, if any (comments ignored).
apply_mode_line() {
  [ -r "$1" ] || return 0
  grep -E '^[[:space:]]*APPLY_MODE=' "$1" | tail -n 1 | sed -E 's/^[[:space:]]+//' || true
}

# Sets APPLY_MODE=dry_run in env file $1: replaces the active line, or with $2=append adds one.
# Written beside it and renamed, so a crash never leaves half a file; mode 0600 (it holds credentials).
# Each step is checked (set -e does not hold inside a function called with ||) and the file read back: a change
# that was not made is never reported as made.
set_apply_mode() {
  local file=$1 how=$2 before tmp
  if [ ! -e "$file" ]; then
    if [ "$how" = append ]; then
      (umask 077 && echo 'APPLY_MODE=dry_run' > "$file") 2>/dev/null || { echo "  $file: cannot create it"; return 1; }
      echo "  $file: created with APPLY_MODE=dry_run"
    fi
    return 0
  fi
  before=$(apply_mode_line "$file")
  [ -n "$before" ] || [ "$how" = append ] || return 0
  tmp=$(mktemp "$file.XXXXXX" 2>/dev/null) || { echo "  $file: cannot write beside it (permissions?)"; return 1; }
  if [ -n "$before" ]; then
    sed -E 's/^[[:space:]]*APPLY_MODE=.*/APPLY_MODE=dry_run/' "$file" > "$tmp" 2>/dev/null
  else
    { cat "$file" && { [ -z "$(tail -c 1 "$file")" ] || echo; } && echo 'APPLY_MODE=dry_run'; } > "$tmp" 2>/dev/null
  fi || { rm -f "$tmp"; echo "  $file: cannot read it (permissions?)"; return 1; }
  chown --reference="$file" "$tmp" 2>/dev/null || true
  if ! { chmod 0600 "$tmp" && mv -f "$tmp" "$file"; }; then
    rm -f "$tmp"
    echo "  $file: cannot replace it (permissions?)"
    return 1
  fi
  [ "$(apply_mode_line "$file")" = "APPLY_MODE=dry_run" ] || { echo "  $file: APPLY_MODE=dry_run did not stick"; return 1; }
  echo "  $file: APPLY_MODE=dry_run (was: ${before:-unset})"
}

# Step 2. The daemons' own env files override common.env, so an APPLY_MODE there is replaced too.
persist_dry_run() {
  local has_units=0
  units_installed && has_units=1
  if [ "$has_units" = 0 ] && [ "$persist" = 0 ]; then
    echo "  systemd units not installed here: nothing to persist (the runtime switch holds until 'quantum dry-run off')"
    return 0
  fi
  set_apply_mode "$env_dir/common.env" append || return 1
  set_apply_mode "$env_dir/intent-executor.env" replace || return 1
  set_apply_mode "$env_dir/apply-layer.env" replace || return 1
  if [ "$has_units" = 0 ]; then
    echo "  no systemd units to restart: APPLY_MODE applies when the daemons next start"
    return 0
  fi
  if [ "$restart" = 0 ]; then
    echo "  units not restarted (--no-restart): APPLY_MODE applies at their next start"
    return 0
  fi
  if systemctl restart "${RESTARTED_UNITS[@]}"; then
    echo "  restarted ${RESTARTED_UNITS[*]}"
  else
    echo "  RESTART FAILED: systemctl restart ${RESTARTED_UNITS[*]} (the runtime switch still holds)"
    return 1
  fi
}

# Step 3a: one plan that passes both permits must stop at the dry-run check.
verify_test_plan() {
  local plan_id since entry
  plan_id="rollback-check-$(date +%s%N | cut -c1-13)"
  since=$(ops_last_id quantum:stream:apply.result)
  entry=$(rcli XADD quantum:stream:apply.plan "*" plan_id "$plan_id" decision EXECUTE symbol "$symbol" \
    side "$side" type MARKET qty "$qty" reduceOnly false source rollback_check)
  echo "  test plan $plan_id: $symbol $side $qty -> $entry"
  if ! ops_wait_result "$plan_id" "$since" "$timeout"; then
    echo "  result: none within ${timeout}s (is the fleet running? quantum status)"
    echo "  the test plan may still execute when the fleet reads it: look for its result ($plan_id) and, if it"
    echo "  executed, close it (quantum flatten $symbol)"
    return 1
  fi
  echo "  result: $(ops_result_line)"
  if [ "${OPS_ENTRY[executed]:-}" = false ] && [ "${OPS_ENTRY[reason]:-}" = dry_run ]; then
    return 0
  fi
  if [ "${OPS_ENTRY[executed]:-}" = false ]; then
    case "${OPS_ENTRY[reason]:-}" in
      kill_switch|execution_disabled|auto_disarmed)
        echo "  refused with ${OPS_ENTRY[reason]} before reaching the dry-run check: the fleet is halted or reduce-only,"
        echo "  so no open can reach it now (the switch of step 1 holds); verify again after 'quantum kill off' or"
        echo "  'quantum execution enable'" ;;
      *)
        echo "  refused with ${OPS_ENTRY[reason]:-?} before reaching the dry-run check: try --symbol on a symbol without a position" ;;
    esac
  else
    echo "  THE TEST PLAN EXECUTED: dry run is NOT in force"
    close_test_position "${OPS_ENTRY[filled_qty]:-$qty}"
  fi
  return 1
}

# The test open executed (found in review: it was left open): a reduce-only close of what it filled, sent the same
# way, which dry run not holding lets through too.
close_test_position() {
  local filled=$1 close_side=SELL plan_id since
  [ "$side" = SELL ] && close_side=BUY
  plan_id="rollback-check-close-$(date +%s%N | cut -c1-13)"
  since=$(ops_last_id quantum:stream:apply.result)
  rcli XADD quantum:stream:apply.plan "*" plan_id "$plan_id" decision EXECUTE symbol "$symbol" side "$close_side" \
    type MARKET qty "$filled" reduceOnly true source rollback_check >/dev/null
  if ops_wait_result "$plan_id" "$since" "$timeout" && [ "${OPS_ENTRY[executed]:-}" = true ]; then
    echo "  the test position is closed again: $(ops_result_line)"
  else
    echo "  THE TEST POSITION MAY STILL BE OPEN ($symbol $side $filled): close it, e.g. quantum flatten $symbol"
  fi
}

# Step 3b: every result written after $1 (the rollback's start) must say executed=false.
verify_no_execution_since() {
  local last=$1 total=0 executed=0
  local -a lines=()
  while ops_next_entry quantum:stream:apply.result "$last" 0; do
    last=$OPS_ENTRY_ID
    total=$((total + 1))
    [ "${OPS_ENTRY[executed]:-}" = true ] && executed=$((executed + 1))
    lines+=("    $(ops_result_line)")
  done
  echo "  results since the rollback began: $total, executed=true: $executed"
  local shown=$((total > 10 ? total - 10 : 0))
  [ "$total" -eq 0 ] || printf '%s\n' "${lines[@]:shown}"
  [ "$executed" -eq 0 ]
}

undo_rollback() {
  local line
  quantum_cli dry-run off | sed 's/^/  /'
  line=$(apply_mode_line "$env_dir/common.env")
  echo "  $env_dir/common.env: ${line:-no APPLY_MODE line (or not readable here)} (not changed)"
  echo "  to send orders again after a restart: set APPLY_MODE=testnet (live needs EXCHANGE_TARGET=mainnet) in"
  echo "  $env_dir/common.env, remove APPLY_MODE from the daemons' own env files, then run:"
  echo "  systemctl restart ${RESTARTED_UNITS[*]}"
}

ops_redis_init
echo "Redis: $OPS_REDIS_SHOWN"
if [ "$undo" = 1 ]; then
  echo "Undo: lifting the runtime dry-run switch"
  undo_rollback
  exit 0
fi

status=0
on_mainnet=0  # before the restart, which makes quantum:mode DRY_RUN
ops_on_mainnet || on_mainnet=$?  # 1: not mainnet; 2: cannot tell, taken as mainnet
rollback_start=$(ops_last_id quantum:stream:apply.result)
echo "Step 1/3: runtime switch (quantum:apply:dry_run)"
quantum_cli dry-run on | sed 's/^/  /'
echo "Step 2/3: persist APPLY_MODE=dry_run"
persist_dry_run || status=1
echo "Step 3/3: verify"
if [ "$on_mainnet" != 1 ] && [ "$mainnet" != 1 ]; then
  echo "  no test plan on a mainnet fleet (it would be a real open if dry run did not hold): pass --mainnet to send one"
else
  verify_test_plan || status=1
fi
verify_no_execution_since "$rollback_start" || status=1
if [ "$status" = 0 ]; then
  echo "ROLLBACK OK: dry run in force, nothing executed since the rollback began"
else
  echo "ROLLBACK NOT VERIFIED: see above"
fi
exit "$status"
