#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine: installs Debian's docker.io and starts dockerd in the
# background when `docker info` fails. Safe to run again; does nothing when the engine already answers.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "ensure-docker: starting dockerd in the background (log: /var/log/dockerd.log)" >&2
  nohup dockerd >/var/log/dockerd.log 2>&1 &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "ensure-docker: the Docker engine did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
