#!/bin/bash
# Vagrant provisioning, step 3 of 4: install snapsite as an admin does, from
# its .deb (scripts/package-deb): /usr/bin/snapsite, the plugins in
# /usr/lib/snapsite/plugins/, /etc/snapsite/, the systemd units (disabled),
# the man pages. The .deb is the host's (scripts/vagrant-test builds it into
# vagrant/.bin/, synced with the checkout: no compiler in the VM); without
# one it is built here from the synced checkout (/snapsite). Debian 12's rustc
# is older than the crate's rust-version, so that toolchain comes from rustup
# (minimal profile, root's ~/.cargo). Re-run with
# `vagrant provision --provision-with snapsite` after `vagrant rsync` to pick
# up changes.
set -euo pipefail
PREBUILT=/snapsite/vagrant/.bin
install_deb() {
    dpkg -i "$1" > /dev/null
    /usr/bin/snapsite --help > /dev/null
    echo "snapsite installed from $(basename "$1"): /usr/bin/snapsite, plugins in /usr/lib/snapsite/plugins/"
}
mkdir -p /var/lib/snapsite
deb=$(find "$PREBUILT" -maxdepth 1 -name 'snapsite_*.deb' 2> /dev/null | sort | tail -n 1)
if [ -n "$deb" ]; then
    install_deb "$deb"
    # The drill's reference mail store (not part of the package).
    [ ! -x "$PREBUILT/mailstore" ] || install -m 0755 "$PREBUILT/mailstore" /usr/local/bin/mailstore
    exit 0
fi
export PATH=/root/.cargo/bin:$PATH
if ! command -v cargo > /dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
cd /snapsite
export CARGO_TARGET_DIR=/var/cache/snapsite-build
cargo build --release --locked -p snapsite -p mailstore
install -m 0755 "$CARGO_TARGET_DIR/release/mailstore" /usr/local/bin/mailstore
OUT=$(mktemp -d)
install_deb "$(scripts/package-deb --binary "$CARGO_TARGET_DIR/release/snapsite" --out "$OUT")"
rm -rf "$OUT"
