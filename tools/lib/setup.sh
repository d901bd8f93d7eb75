# Shared set-up for tools/test, tools/launch and tools/bench: Debian packages, configure, build.
# Source it; it defines functions only.

TALLY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TALLY_PACKAGES=(cmake ninja-build g++ pkg-config libzmq3-dev cppzmq-dev libsodium-dev
                libmsgpack-cxx-dev libgtest-dev)

tally_log() { printf '%s\n' "$*" >&2; }

# Installs whatever of TALLY_PACKAGES (plus any extra arguments) is missing.
tally_ensure_packages() {
  local missing=() p
  for p in "${TALLY_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    tally_log "tally: missing Debian packages; run as root:"
    tally_log "  apt-get update && apt-get install -y ${missing[*]}"
    return 1
  fi
  tally_log "tally: installing ${missing[*]}"
  apt-get update -qq >&2 || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || return 1
}

# Configures and builds into $TALLY_BUILD (default build/). Extra arguments go to cmake.
tally_build() {
  TALLY_BUILD=${TALLY_BUILD:-$TALLY_ROOT/build}
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # Configure once (or when options are given); later builds re-configure by themselves when a
  # CMakeLists.txt changes.
  if [ ! -f "$TALLY_BUILD/CMakeCache.txt" ] || [ $# -gt 0 ] || [ -n "${TALLY_WERROR:-}" ]; then
    [ -f "$TALLY_BUILD/CMakeCache.txt" ] && gen=()
    cmake -S "$TALLY_ROOT" -B "$TALLY_BUILD" "${gen[@]}" -DTALLY_WERROR="${TALLY_WERROR:-OFF}" "$@" >&2 || return 1
  fi
  cmake --build "$TALLY_BUILD" -j "$(nproc)" >&2 || return 1
}

# Builds into $TALLY_BUILD, checking the Debian packages (plus any named in TALLY_EXTRA_PACKAGES)
# only when there is no build yet, and again if the build fails: a package query per package
# costs ~10 ms, more than a round. Arguments go to cmake, as for tally_build.
tally_setup() {
  TALLY_BUILD=${TALLY_BUILD:-$TALLY_ROOT/build}
  local extra=(${TALLY_EXTRA_PACKAGES:-})
  if [ ! -f "$TALLY_BUILD/CMakeCache.txt" ]; then
    tally_ensure_packages "${extra[@]}" || return 1
    tally_build "$@"
    return
  fi
  tally_build "$@" && return 0
  tally_log "tally: the build failed; checking the Debian packages it needs"
  tally_ensure_packages "${extra[@]}" || return 1
  tally_build "$@"
}
