#!/bin/sh
# Debian packages the tests and `make drill` need on this machine, installed only when one
# is missing (so a second run costs a few dpkg-query calls, and no apt at all):
#   dash bash busybox-static       the shells the injected preStop hook must work under
#                                  (tests/test_checkpoint_contract.py runs it under each);
#                                  busybox-static's shell runs its applets without PATH
#   containerd runc                the container runtime of the harness's real nodes
#   containernetworking-plugins    bridge, host-local and loopback CNI plugins for their pods
#   gcc libc6-dev                  the static pause program of the sandbox image
#   openssl                        the harness's certificates
# Run as root (CI and these machines are); `make host-packages` calls it.
set -eu

packages="dash bash busybox-static containerd runc containernetworking-plugins gcc libc6-dev openssl"

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $package"
done
[ -n "$missing" ] || exit 0

echo "installing Debian packages:$missing" >&2
if [ "$(id -u)" != 0 ]; then
    echo "error: installing$missing needs root (sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
