#!/usr/bin/env bash
# Builds the sonde packages from a clean tree:
#   target/packages/sonde-agent_VERSION-REV_ARCH.deb
#   target/packages/sonde-collector_VERSION-REV_ARCH.deb
#   target/packages/sonde-agent-VERSION-REV.ARCH.rpm
#   target/packages/sonde-collector-VERSION-REV.ARCH.rpm
#
# Usage: packaging/build.sh [REVISION]
#   REVISION  package revision (Debian revision / RPM release), default 1;
#             raise it to rebuild the same sources as an upgrade.
#
# Needs cargo-deb and cargo-generate-rpm; installs them (cargo install
# --locked) when missing. Binaries come from the `dist` profile (release,
# stripped); man pages are generated from the command-line definitions.
set -euo pipefail
cd "$(dirname "$0")/.."

revision=${1:-1}
case $revision in
    '' | *[!0-9]*) echo "build.sh: REVISION must be a number, not '$revision'" >&2; exit 2 ;;
esac

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm

cargo build --locked --profile dist \
    -p sonde-agent -p sonde-collector -p sondectl -p sonde-mangen
man=target/dist/man
rm -rf "$man"
target/dist/sonde-mangen "$man" >/dev/null
# Debian's packages get the pages as they are (cargo-deb compresses them);
# the RPMs get them compressed, as rpmbuild's brp-compress would.
for page in "$man"/*.[18]; do gzip -9nc "$page" >"$page.gz"; done

# One set of rpm scriptlets for both packages, with the name filled in.
for pkg in sonde-agent sonde-collector; do
    mkdir -p "target/rpm-scripts/$pkg"
    for script in packaging/rpm/*.sh; do
        sed "s/@PACKAGE@/$pkg/g" "$script" >"target/rpm-scripts/$pkg/${script##*/}"
    done
done

out=target/packages
mkdir -p "$out"
for pkg in sonde-agent sonde-collector; do
    dir=${pkg#sonde-}
    cargo deb --locked -p "$pkg" --no-build --profile dist \
        --deb-revision "$revision" -o "$out/"
    cargo generate-rpm -p "$dir" --profile dist \
        -s "release = \"$revision\"" -o "$out/"
done
ls -l "$out"
