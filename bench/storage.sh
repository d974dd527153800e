#!/usr/bin/env bash
# Storage operations on a generated tree of mixed small and large files (default about 1 GiB), on local disk:
#   export  (workspaced export)          next to  tar czf
#   import  (workspaced import)          next to  tar xzf
#   migrate (workspaced migrate, BLAKE3 verified) next to  rsync -a (and rsync -a --fsync), then b3sum over both trees
# Every command runs on the same tree in the same run; times are wall-clock seconds and MB/s of tree content.
# Usage: bench/storage.sh [size_mib=1024]   Needs: rsync, b3sum (apt-get install rsync b3sum), target/release/workspaced.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
bin=$PWD/target/release/workspaced
tmp=$(mktemp -d /var/tmp/wsbench-storage.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/base/src" "$tmp/efs" "$tmp/rsync"

# Half the bytes in 8 KiB-64 KiB source-like files (compressible), half in 8 MiB binary-like files (not).
python3 - "$tmp/base/src" "$size_mib" <<'PY'
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
random.seed(1)
half = mib * 1024 * 1024 // 2
words = [b"def", b"return", b"import", b"class", b"self", b"value", b"for", b"in", b"range", b"print", b"\n", b"    "]
n = done = 0
while done < half:
    d = os.path.join(root, f"pkg{n // 200:03d}")
    os.makedirs(d, exist_ok=True)
    size = random.randint(8 * 1024, 64 * 1024)
    data = b" ".join(random.choice(words) for _ in range(size // 5))[:size]
    open(os.path.join(d, f"m{n:05d}.py"), "wb").write(data)
    done += len(data); n += 1
os.makedirs(os.path.join(root, "data"), exist_ok=True)
big = 0; i = 0
while big < half:
    open(os.path.join(root, "data", f"blob{i:03d}.bin"), "wb").write(os.urandom(8 * 1024 * 1024))
    big += 8 * 1024 * 1024; i += 1
print(f"tree: {n} small files, {i} large files", file=sys.stderr)
PY
chown -R 1000:1000 "$tmp/base/src"
bytes=$(du -sb "$tmp/base/src" | cut -f1)
mb=$(python3 -c "print($bytes/1e6)")
export WORKSPACE_BASE_PATH="$tmp/base" WORKSPACED_URL=http://127.0.0.1:1 RUST_LOG=warn
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.2f}')"; }
rate() { python3 -c "print(f'{$mb/$1:.0f}')"; }

printf "tree: %.0f MB in %s files\n" "$mb" "$(find "$tmp/base/src" -type f | wc -l)"
a=$(t tar czf "$tmp/tar.tgz" -C "$tmp/base" src)
b=$(t "$bin" export src -o "$tmp/ws.tgz")
printf "export   tar czf        %7s s  %5s MB/s   | workspaced export  %7s s  %5s MB/s\n" "$a" "$(rate $a)" "$b" "$(rate $b)"
mkdir -p "$tmp/x"
a=$(t tar xzf "$tmp/tar.tgz" -C "$tmp/x")
b=$(t "$bin" import dst "$tmp/ws.tgz")
printf "import   tar xzf        %7s s  %5s MB/s   | workspaced import  %7s s  %5s MB/s\n" "$a" "$(rate $a)" "$b" "$(rate $b)"
rm -rf "$tmp/x" "$tmp/base/dst" "$tmp/tar.tgz" "$tmp/ws.tgz"
sync
a=$(t bash -c "rsync -a '$tmp/base/src' '$tmp/rsync/' && (cd '$tmp/base/src' && find . -type f -print0 | xargs -0 b3sum) > '$tmp/sums' && (cd '$tmp/rsync/src' && b3sum --check '$tmp/sums')")
b=$(t "$bin" migrate --to "$tmp/efs")
printf "migrate  rsync -a+b3sum %7s s  %5s MB/s   | workspaced migrate %7s s  %5s MB/s\n" "$a" "$(rate $a)" "$b" "$(rate $b)"
# workspaced syncs each file before publishing it; rsync --fsync is the same durability.
rm -rf "$tmp/rsync" "$tmp/efs"; mkdir -p "$tmp/rsync" "$tmp/efs"; sync
a=$(t bash -c "rsync -a --fsync '$tmp/base/src' '$tmp/rsync/' && (cd '$tmp/base/src' && find . -type f -print0 | xargs -0 b3sum) > '$tmp/sums' && (cd '$tmp/rsync/src' && b3sum --check '$tmp/sums')")
printf "migrate  rsync -a --fsync+b3sum %7s s  %5s MB/s\n" "$a" "$(rate $a)"
