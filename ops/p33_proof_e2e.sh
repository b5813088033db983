#!/usr/bin/env bash
# Permit-chain proof: XADD one test plan (the seed's test_open_005 shape, a unique plan id),
# wait for its result, GET both permits and print them with the result:
#   Governor ALLOW -> P3.3 ALLOW -> executed
# Exits non-zero when a permit is missing or denied, or the plan did not execute.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: p33_proof_e2e.sh [--symbol SYM] [--side BUY|SELL] [--qty QTY] [--close] [--timeout S] [--mainnet]
                        [--host HOST [-p PORT] [-i KEY] [-o SSH_OPTION]... [--remote-python PY] [--env NAME[=VALUE]]...]
  --symbol SYM    test plan symbol (default BTCUSDT)
  --side SIDE     BUY or SELL (default BUY)
  --qty QTY       quantity; must clear the symbol's minimum notional (default 0.002)
  --close         then close the position again with a reduce-only plan and prove that too
  --timeout S     seconds to wait for each result (default 20)
  --mainnet       allow the proof when the fleet trades on mainnet (real orders, real money)
  --host HOST     run on HOST over ssh (ops/remote_run.py); Redis from REDIS_URL there,
                  else /etc/quantum/common.env, else redis://127.0.0.1:6379/0
USAGE
}

# shellcheck source-path=SCRIPTDIR source=lib/ops.sh
declare -F ops_lib_loaded >/dev/null || . "$(dirname "$0")/lib/ops.sh"
ops_maybe_remote "$0" "$@"

symbol=BTCUSDT side=BUY qty=0.002 close=0 timeout=20 mainnet=0
while [ $# -gt 0 ]; do
  case $1 in
    --symbol) symbol=${2^^}; shift 2 ;;
    --side) side=${2^^}; shift 2 ;;
    --qty) qty=$2; shift 2 ;;
    --close) close=1; shift ;;
    --timeout) ops_whole_seconds --timeout "${2:-}"; timeout=$2; shift 2 ;;
    --mainnet) mainnet=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
case $side in BUY|SELL) ;; *) usage >&2; exit 2 ;; esac

ops_redis_init
echo "Redis: $OPS_REDIS_SHOWN"
fleet_mode=$(rcli GET quantum:mode)
echo "Fleet mode: ${fleet_mode:-unknown}"
on_mainnet=0
ops_on_mainnet || on_mainnet=$?  # 1: not mainnet; 2: cannot tell, taken as mainnet
if [ "$on_mainnet" != 1 ] && [ "$mainnet" != 1 ]; then
  ops_die "the fleet trades on mainnet: this proof would open a real position with real money; pass --mainnet (and --close) to mean it"
fi
verdicts=()

# Prints the permit under $1's key; succeeds only when the permit exists and allows.
show_permit() {
  local label=$1 key=$2 permit reason
  permit=$(rcli GET "$key")
  if [ -z "$permit" ]; then
    echo "  $label permit ($key): MISSING (never issued, or its TTL passed)"
    return 1
  fi
  echo "  $label permit ($key): $permit"
  reason=$(printf '%s' "$permit" | sed -n 's/.*"reason":"\([^"]*\)".*/\1/p')
  if [[ $permit == *'"allow":true'* ]]; then
    verdicts+=("$label ALLOW")
    return 0
  fi
  verdicts+=("$label DENY ($reason)")
  return 1
}

# XADDs one plan and proves its chain; $1 plan id, $2 side, $3 reduceOnly, $4 quantity.
prove_plan() {
  local plan_id=$1 plan_side=$2 reduce_only=$3 plan_qty=$4 since entry ok=0
  verdicts=()
  echo "Plan $plan_id: $symbol $plan_side $plan_qty MARKET reduceOnly=$reduce_only"
  since=$(ops_last_id quantum:stream:apply.result)
  entry=$(rcli XADD quantum:stream:apply.plan "*" plan_id "$plan_id" decision EXECUTE symbol "$symbol" \
    side "$plan_side" type MARKET qty "$plan_qty" reduceOnly "$reduce_only" source test_manual)
  echo "  XADD quantum:stream:apply.plan -> $entry"
  if ! ops_wait_result "$plan_id" "$since" "$timeout"; then
    echo "  result: none within ${timeout}s (is the fleet running? quantum status)"
    ok=1
  else
    echo "  result: $(ops_result_line)"
  fi
  show_permit Governor "quantum:permit:p32:$plan_id" || ok=1
  show_permit P3.3 "quantum:permit:p33:$plan_id" || ok=1
  if [ "${OPS_ENTRY[plan_id]:-}" = "$plan_id" ] && [ "${OPS_ENTRY[executed]:-}" = true ]; then
    verdicts+=(executed)
  else
    verdicts+=("not executed (${OPS_ENTRY[reason]:-no result})")
    ok=1
  fi
  local chain="" verdict
  for verdict in "${verdicts[@]}"; do chain+="${chain:+ → }$verdict"; done
  echo "  $chain"
  return "$ok"
}

run_id="p33proof-$(date +%s%N | cut -c1-13)"
status=0
prove_plan "$run_id-open" "$side" false "$qty" || status=1
# The close takes what the open filled (found in review: the asked quantity, while ALLOW_UPSIZE may have sent more,
# left the rest open under "PROOF OK").
filled=${OPS_ENTRY[filled_qty]:-$qty}
if [ "$close" = 1 ]; then
  if [ "$status" = 0 ]; then
    close_side=SELL
    [ "$side" = SELL ] && close_side=BUY
    prove_plan "$run_id-close" "$close_side" true "$filled" || status=1
  else
    echo "Close skipped: the open did not execute"
  fi
fi
if [ "$status" = 0 ]; then echo "PROOF OK: permit chain allowed and the exchange executed"; else echo "PROOF FAILED"; fi
exit "$status"
