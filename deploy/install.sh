#!/usr/bin/env bash
# Install the Quantum Trader fleet: a venv under the prefix, systemd units, /etc/quantum templates
# (mode 0600, never overwriting an operator's edits), a credential placeholder, a system user.
# Idempotent. Testable without touching the host: deploy/install.sh --root /tmp/somewhere
# --uninstall takes away what it installed (units, venv); --purge also /etc/quantum. A record of the units
# written (/etc/quantum/.installed-units.sha256) tells an operator's edit from an older version.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: deploy/install.sh [--root DIR] [--prefix DIR] [--python PYTHON] [--no-venv] [--restart]
                         [--discard-unit-edits]
       deploy/install.sh --uninstall [--purge] [--root DIR] [--prefix DIR]
  --root DIR      install below DIR instead of / (tests, packaging); no user, no systemctl
  --prefix DIR    where the venv and docs go (default /opt/quantum)
  --python PY     interpreter for the venv (default python3; 3.11 or newer)
  --no-venv       lay out units and configuration only
  --restart       with fleet units running: stop them, install, start them again (without it the
                  installer refuses: a running daemon would load new modules beside its old ones)
  --discard-unit-edits  a unit edited in place since the last install is replaced (a copy of it is kept
                  as <unit>.edited.N); without it the installer refuses and changes nothing
  --uninstall     stop and disable the fleet's units, remove them and the prefix (venv, README);
                  /etc/quantum (settings, credentials), the user and Redis' data stay
  --purge         with --uninstall: remove /etc/quantum too
USAGE
}

root=/
prefix=/opt/quantum
python=python3
make_venv=1
restart=0
discard_edits=0
uninstall=0
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --no-venv) make_venv=0; shift ;;
    --restart) restart=1; shift ;;
    --discard-unit-edits) discard_edits=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

case "$prefix" in
  /*) ;;
  *) echo "install: --prefix must be an absolute path" >&2; exit 2 ;;
esac
case "$prefix" in
  *[!A-Za-z0-9/._-]*) echo "install: --prefix may hold only letters, digits and / . _ -" >&2; exit 2 ;;
esac
while [ "${prefix%/}" != "$prefix" ]; do prefix=${prefix%/}; done
case "$prefix/" in
  *//*|*/./*|*/../*) echo "install: --prefix must be a plain path (no //, . or ..)" >&2; exit 2 ;;
esac
# The prefix holds the venv and nothing else of the host's: uninstall removes what it wrote there.
case "$prefix" in
  ""|/usr|/usr/local|/opt|/srv|/etc|/var|/var/lib|/home|/root|/bin|/sbin|/lib|/lib64|/tmp|/boot|/run)
    echo "install: --prefix must be a directory of its own, such as /opt/quantum, not ${prefix:-/}" >&2; exit 2 ;;
esac

if [ "$purge" = 1 ] && [ "$uninstall" = 0 ]; then
  echo "install: --purge goes with --uninstall" >&2; exit 2
fi

src=$(cd "$(dirname "$0")/.." && pwd)
dest() { printf '%s%s' "${root%/}" "$1"; }
say() { printf 'install: %s\n' "$*"; }
units_dir=$(dest /etc/systemd/system)
# What this installer wrote into each unit (sha256), so that a unit edited in place is noticed, not overwritten.
manifest=$(dest /etc/quantum/.installed-units.sha256)
units=()
for unit in "$src"/deploy/systemd/*.service "$src"/deploy/systemd/*.target; do
  units+=("$(basename "$unit")")
done
sum_of() { sha256sum "$1" | cut -d' ' -f1; }
# The sha256 the record holds for a unit (nothing when there is no record of it).
recorded_sum() { if [ -e "$manifest" ]; then awk -v u="$1" '$2 == u {print $1}' "$manifest"; fi; }
# A free name beside a unit for a copy of the operator's version of it: systemd loads no such file.
keep_copy() {
  local n=1
  while [ -e "$1.edited.$n" ]; do n=$((n + 1)); done
  cp -p "$1" "$1.edited.$n"
  printf '%s' "$1.edited.$n"
}

# The host's systemd: only when installing on it (SYSTEMCTL names another binary, for tests).
systemctl=${SYSTEMCTL:-}
if [ -z "$systemctl" ] && [ "$root" = / ] && command -v systemctl >/dev/null 2>&1; then
  systemctl=systemctl
fi
if [ "$uninstall" = 1 ]; then
  present=()
  for unit in "${units[@]}"; do
    if [ -e "$units_dir/$unit" ]; then present+=("$unit"); fi
  done
  if [ -n "$systemctl" ] && [ "${#present[@]}" -gt 0 ]; then
    # Each step on the installed units only (one unknown unit fails a whole systemctl call), and checked: the
    # units and the venv a daemon runs from are not removed while it may still be sending orders.
    "$systemctl" stop "${present[@]}"
    "$systemctl" disable "${present[@]}"
    still=()
    for unit in "${present[@]}"; do
      if "$systemctl" is-active --quiet "$unit"; then still+=("$unit"); fi
    done
    if [ "${#still[@]}" -gt 0 ]; then
      echo "install: still running after stop: ${still[*]}; nothing removed" >&2
      exit 1
    fi
    say "stopped and disabled ${present[*]} (positions on the exchange are not touched)"
  fi
  for unit in "${present[@]}"; do
    rm -f "$units_dir/$unit"
    if [ -d "$units_dir/$unit.d" ]; then say "left your drop-ins in $units_dir/$unit.d"; fi
  done
  for copy in "$units_dir"/quantum*.edited.*; do
    if [ -e "$copy" ]; then say "left your copy $copy"; fi
  done
  rm -rf "$(dest "$prefix/venv")"
  rm -f "$(dest "$prefix/README.md")" "$manifest"
  if [ "$(readlink "$(dest /usr/local/bin/quantum)" 2>/dev/null)" = "$prefix/venv/bin/quantum" ]; then
    rm -f "$(dest /usr/local/bin/quantum)"
  fi
  say "removed ${#present[@]} systemd units"
  if [ -d "$(dest "$prefix")" ]; then
    if rmdir "$(dest "$prefix")" 2>/dev/null; then
      say "removed $(dest "$prefix")"
    else
      say "left $(dest "$prefix"): it holds files this installer did not write"
    fi
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$(dest /etc/quantum)"
    say "removed $(dest /etc/quantum) (settings and credentials)"
  else
    say "kept $(dest /etc/quantum) (settings and credentials; --purge removes it)"
  fi
  if [ -n "$systemctl" ]; then "$systemctl" daemon-reload; fi
  exit 0
fi

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "install: $python is older than 3.11" >&2; exit 1; }

# Units edited in place since the last install (their sha256 is not the one recorded): refused before anything
# changes, unless --discard-unit-edits. An edit such as Environment=APPLY_MODE=dry_run must not vanish in an
# upgrade that restarts the fleet. Edits belong in a drop-in (systemctl edit), which an install leaves alone.
edited=()
for unit in "${units[@]}"; do
  installed=$units_dir/$unit
  recorded=$(recorded_sum "$unit")
  if [ -e "$installed" ] && [ -n "$recorded" ] && [ "$recorded" != "$(sum_of "$installed")" ]; then
    edited+=("$unit")
  fi
done
if [ "${#edited[@]}" -gt 0 ] && [ "$discard_edits" = 0 ]; then
  echo "install: edited in place since the last install: ${edited[*]}; nothing changed. Move the changes into" \
    "drop-ins (systemctl edit <unit>) and restore the units, or pass --discard-unit-edits (a copy of each is kept)" >&2
  exit 1
fi

# The EXIT trap while the units this install stopped are down: on a failure, start them again and say so.
start_again_after_failure() {
  local status=$?
  [ "$status" = 0 ] && return 0
  echo "install: FAILED (exit $status) after stopping ${running% }: starting them again, on what is installed now" >&2
  "$systemctl" daemon-reload || true
  # shellcheck disable=SC2086  # one word per unit
  if "$systemctl" start $running; then
    echo "install: started ${running% } again; fix the failure above and install again" >&2
  else
    echo "install: COULD NOT START ${running% }: THE FLEET IS DOWN (systemctl status quantum-*)" >&2
  fi
  exit "$status"
}

running=""
if [ -n "$systemctl" ]; then
  running=$("$systemctl" list-units --type=service --state=active --plain --no-legend 'quantum-*' \
    | awk '{print $1}' | tr '\n' ' ')
fi
if [ -n "${running// /}" ]; then
  if [ "$restart" = 0 ]; then
    echo "install: fleet units are running (${running% }): stop them first (systemctl stop quantum.target" \
      "quantum-exchange-sim), or pass --restart; a running daemon would load new modules beside its old ones" >&2
    exit 1
  fi
  # Found in review: a failure from here on (a unit's stop timing out, pip without network, a full disk) left the fleet
  # stopped, open positions without their exits, and nothing said so. On any failure the units are started again.
  trap start_again_after_failure EXIT
  # shellcheck disable=SC2086  # one word per unit
  "$systemctl" stop $running
  say "stopped ${running% }"
fi

if [ "$root" = / ] && ! id quantum >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin quantum
  say "created system user quantum"
fi

install -d -m 0755 "$(dest "$prefix")" "$(dest /etc/systemd/system)"
install -d -m 0755 "$(dest /etc/quantum)"
install -d -m 0700 "$(dest /etc/quantum/credentials)"

if [ "$make_venv" = 1 ]; then
  venv=$(dest "$prefix/venv")
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "$src"
  say "installed the fleet into $venv"
  # The runbook's `quantum kill on` on the host (found in review: the CLI was only in the venv, "command not found").
  install -d -m 0755 "$(dest /usr/local/bin)"
  ln -sfn "$prefix/venv/bin/quantum" "$(dest /usr/local/bin/quantum)"
  say "linked $(dest /usr/local/bin/quantum) to $prefix/venv/bin/quantum"
fi
install -m 0644 "$src/README.md" "$(dest "$prefix/README.md")"

# The committed units name the default prefix (shared/deploy.py renders them); another prefix is put in its place.
# A unit that differs from this version with no record of what was installed (an install before the record
# existed) may hold an edit too: a copy is kept beside it, as for an edit discarded with --discard-unit-edits.
sums=""
for unit in "${units[@]}"; do
  installed=$units_dir/$unit
  sed "s#/opt/quantum/#$prefix/#g" "$src/deploy/systemd/$unit" > "$installed.tmp"
  # Differs from this version and from the record (or has none): a copy first.
  if [ -e "$installed" ] && ! cmp -s "$installed" "$installed.tmp" \
    && [ "$(recorded_sum "$unit")" != "$(sum_of "$installed")" ]; then
    copy=$(keep_copy "$installed")
    say "$installed differs from what was installed: a copy is kept as $copy"
  fi
  chmod 0644 "$installed.tmp"
  mv -f "$installed.tmp" "$installed"
  sums+="$(sum_of "$installed") $unit"$'\n'
done
printf '%s' "$sums" > "$manifest"
chmod 0644 "$manifest"
say "installed ${#units[@]} systemd units"

for template in "$src"/etc/quantum/*.env; do
  target=$(dest "/etc/quantum/$(basename "$template")")
  if [ -e "$target" ]; then
    chmod 0600 "$target"
    # The operator's file stays; this version's template goes beside it, so new settings can be seen (diff them).
    if ! cmp -s "$template" "$target"; then
      install -m 0600 "$template" "$target.dist"
      say "kept $target; this version's template is $target.dist"
    fi
  else
    install -m 0600 "$template" "$target"
    say "wrote $target"
  fi
done

secret=$(dest /etc/quantum/credentials/binance_api_secret)
if [ ! -e "$secret" ]; then
  # Ignored on the simulator; replace it before pointing EXCHANGE_TARGET at the testnet.
  (umask 077 && printf 'REPLACE_WITH_YOUR_BINANCE_API_SECRET\n' > "$secret")
  say "wrote a placeholder $secret (replace it before using the testnet)"
fi
chmod 0600 "$secret"

if [ -n "$systemctl" ]; then
  "$systemctl" daemon-reload
  if [ -n "${running// /}" ]; then
    trap - EXIT
    # shellcheck disable=SC2086  # one word per unit
    "$systemctl" start $running
    say "started ${running% } again"
  else
    say "systemd reloaded: systemctl enable --now quantum.target quantum-exchange-sim  (the simulator: the default target)"
  fi
fi
