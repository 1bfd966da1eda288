#!/bin/bash
# Vagrant provisioning, step 3 of 4: build snapsite from the synced checkout
# (/snapsite) and install it as /usr/local/bin/snapsite. Debian 12's rustc is
# older than the crate's rust-version, so the toolchain comes from rustup
# (minimal profile, root's ~/.cargo). Re-run with `vagrant provision --provision-with snapsite`
# after `vagrant rsync` to pick up changes.
set -euo pipefail
mkdir -p /etc/snapsite /var/lib/snapsite
# Binaries built on the host (scripts/vagrant-test puts stripped copies of
# its build in vagrant/.bin/, synced with the checkout): no compiler in the VM.
PREBUILT=/snapsite/vagrant/.bin
if [ -x "$PREBUILT/snapsite" ]; then
    install -m 0755 "$PREBUILT/snapsite" /usr/local/bin/snapsite
    [ ! -x "$PREBUILT/mailstore" ] || install -m 0755 "$PREBUILT/mailstore" /usr/local/bin/mailstore
    snapsite --help > /dev/null && echo "snapsite installed from the host's build: /usr/local/bin/snapsite"
    exit 0
fi
export PATH=/root/.cargo/bin:$PATH
if ! command -v cargo > /dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
cd /snapsite
CARGO_TARGET_DIR=/var/cache/snapsite-build cargo build --release --locked
install -m 0755 /var/cache/snapsite-build/release/snapsite /usr/local/bin/snapsite
mkdir -p /etc/snapsite /var/lib/snapsite
snapsite --help > /dev/null && echo "snapsite installed: /usr/local/bin/snapsite"
