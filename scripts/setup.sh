#!/usr/bin/env bash
# Install what building and testing Skiff needs on Debian, and start
# containerd if it is not answering. Safe to run again. Needs root for the
# installs; as another user it only reports what is missing.
set -euo pipefail

PACKAGES=(ca-certificates gcc libc6-dev containerd runc nftables iproute2 util-linux curl bsdutils openssl protobuf-compiler
  busybox-static docker-registry etcd-server etcd-client)
# `setup.sh --bench` adds what `make bench` compares against.
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(dnsperf unbound wrk nginx-light iperf3 iptables)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Packages that enable a service of their own (etcd, unbound, nginx) must not
# hold ports the tests and benchmarks use; tests start their own instances.
if [ -d /run/systemd/system ]; then
  for unit in etcd unbound nginx; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi

# The docker-registry package starts a registry on :5000 through systemd
# where systemd runs; tests start their own on loopback, so nothing to do.

# containerd on its default socket (tests that need their own start their own)
SOCK=/run/containerd/containerd.sock
if [ "$(id -u)" = 0 ] && ! ctr --address "$SOCK" version >/dev/null 2>&1; then
  mkdir -p /var/log/skiff
  nohup containerd >/var/log/skiff/containerd.log 2>&1 &
  for _ in $(seq 1 50); do
    ctr --address "$SOCK" version >/dev/null 2>&1 && break
    sleep 0.2
  done
  ctr --address "$SOCK" version >/dev/null 2>&1 || { echo "setup: containerd did not start; see /var/log/skiff/containerd.log" >&2; exit 1; }
fi
