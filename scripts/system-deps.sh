#!/usr/bin/env bash
# System packages some tests need: Node.js and npm (to build the JupyterLab extension),
# ShellCheck (examples/deploy's batch scripts), OpenSSH (the SSH-launcher test runs sshd in
# network namespaces) and Chromium (the JupyterLab browser tests; Playwright
# drives it, nothing is downloaded by `playwright install`).  Installs only as
# root with apt, and only what is missing; elsewhere it says so and those
# tests skip with a reason.
set -uo pipefail
PATH=$PATH:/usr/sbin:/sbin

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
command -v npm >/dev/null || need+=(nodejs npm)      # builds the JupyterLab extension
command -v shellcheck >/dev/null || need+=(shellcheck)  # lints the Slurm recipe's batch script
[[ ${#need[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; tests needing ${need[*]} will skip" >&2
  exit 0
fi
# Never let the package start this machine's own sshd.
policy=/usr/sbin/policy-rc.d made_policy=no
if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=yes; fi
for attempt in 1 2; do
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
       --no-install-recommends "${need[@]}" >/dev/null; then break; fi
  [[ $attempt == 1 ]] && apt-get update -q >/dev/null || true
done
[[ $made_policy == yes ]] && rm -f "$policy"
exit 0
