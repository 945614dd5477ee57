# Sourced by scripts/test.sh and scripts/build-devices.sh: checks for the Debian/Ubuntu packages
# a script needs, then installs the missing ones (when run as root) or names them and exits 2.
#
#   need_package PACKAGE [TEST...]   PACKAGE counts as present when dpkg knows it or when the
#                                    command TEST... succeeds (e.g. `has_commands sox`)
#   install_missing_packages         as root with apt-get: install what is missing; otherwise
#                                    print the `sudo apt-get install ...` line and exit 2

missing_packages=()

# has_commands NAME...: every NAME is a command on PATH.
has_commands() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || return 1; done
}

need_package() {
  local pkg=$1
  shift
  dpkg -s "$pkg" >/dev/null 2>&1 && return 0
  (($#)) && "$@" >/dev/null 2>&1 && return 0
  missing_packages+=("$pkg")
}

install_missing_packages() {
  ((${#missing_packages[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing missing system packages: ${missing_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
  else
    echo "error: missing system packages: ${missing_packages[*]}" >&2
    echo "  help: install them, then run this again:" >&2
    echo "        sudo apt-get install ${missing_packages[*]}" >&2
    echo "        (or run this script as root, which installs them)" >&2
    exit 2
  fi
}
