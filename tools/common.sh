# Shared by tools/run and tools/test: install what is missing, then build.
# Sourced, not run. Idempotent and quick when nothing changed.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_PKGS="libwebsockets-dev libwebsockets-evlib-ev libev-dev libssl-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev
libcriterion-dev libhiredis-dev redis-server meson ninja-build pkg-config gcc"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages given that are not installed yet.
apt_ensure() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# meson setup once per build dir, then ninja (a no-op when nothing changed).
build_dir() {
    local dir=$1; shift
    if [ ! -f "$ROOT/$dir/build.ninja" ]; then
        say "configuring $dir"
        meson setup "$ROOT/$dir" "$ROOT" "$@" >/dev/null
    fi
    ninja -C "$ROOT/$dir" >/dev/null || ninja -C "$ROOT/$dir"
}
