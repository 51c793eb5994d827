#!/usr/bin/env bash
# Builds a local `debian:bookworm-slim` image with debootstrap + `docker import`, so the real
# Dockerfile builds unchanged on machines that cannot pull from a container registry.
# Cached twice: the image itself (skipped if present) and the rootfs tarball under
# ${TG_CACHE_DIR:-/var/cache/tokengate} (re-imported after the docker state is wiped).
set -euo pipefail

TAG=${TG_BASE_TAG:-debian:bookworm-slim}
MIRROR=${TG_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${TG_CACHE_DIR:-/var/cache/tokengate}
TARBALL="$CACHE_DIR/bookworm-slim-rootfs.tar.gz"
DOCKER=${DOCKER:-docker}

if [[ -n "$($DOCKER images -q "$TAG" 2>/dev/null)" ]]; then
  echo "base-image: $TAG already present"
  exit 0
fi

if [[ ! -s "$TARBALL" ]]; then
  command -v debootstrap >/dev/null ||
    bash "$(dirname "$0")/../../scripts/install-deps.sh" --deploy
  mkdir -p "$CACHE_DIR"
  root=$(mktemp -d /tmp/tg-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "base-image: debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
    tail -30 "$CACHE_DIR/debootstrap.log" >&2
    exit 1
  }
  # Make it look like the official slim image: deb822 sources with updates and security,
  # no package lists, no docs/man pages on later installs.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -czf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi

echo "base-image: importing $TARBALL as $TAG"
$DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  "$TARBALL" "$TAG" >/dev/null
echo "base-image: $TAG ready ($($DOCKER images -q "$TAG"))"
