#!/bin/bash
# Vagrant provisioning, step 1 of 4: Debian packages for a snapsite site.
# Enables contrib + bookworm-backports with the storage-VM lab's own script
# (scripts/vmlab/debian-sources), picks the OpenZFS version the same way the
# lab does (scripts/vmlab/zfs-version), and installs OpenZFS (DKMS), LVM with
# thin-provisioning tools, and what building snapsite needs.
# Env: SNAPSITE_VMLAB_ZFS=backports|bookworm (default backports)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# The locally built box (vagrant/box/build) carries all of it already, with
# the storage lab's zfs.ko for its kernel: nothing to fetch or compile.
if [ -f /etc/snapsite-box ]; then
    modprobe zfs
    modprobe -a dm-thin-pool dm-snapshot
    echo "packages: provided by the snapsite box ($(tr '\n' ' ' < /etc/snapsite-box))"
    zfs version
    exit 0
fi
LAB=/snapsite/scripts/vmlab
APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

"$LAB/debian-sources"
zfsv=$("$LAB/zfs-version" "${SNAPSITE_VMLAB_ZFS:-backports}")
case $zfsv in *bpo*) release=(-t bookworm-backports) ;; *) release=() ;; esac

if [ "$(dpkg-query -W -f='${Version}' zfsutils-linux 2>/dev/null || true)" != "$zfsv" ]; then
    # headers of the running kernel: DKMS builds zfs.ko against them
    "${APT[@]}" install -y -q --no-install-recommends "linux-headers-$(uname -r)" dkms
    "${APT[@]}" install -y -q --no-install-recommends "${release[@]}" \
        "zfs-dkms=$zfsv" "zfsutils-linux=$zfsv"
fi
"${APT[@]}" install -y -q --no-install-recommends \
    lvm2 thin-provisioning-tools openssh-client openssh-server rsync \
    build-essential pkg-config curl ca-certificates
modprobe zfs
modprobe -a dm-thin-pool dm-snapshot
zfs version
