#!/bin/bash
# Vagrant provisioning, step 2 of 4: the storage snapsite drives.
#   both:     ZFS pool "tank", LVM VG "vg0" with thin pool vg0/pool
#   primary:  the live volumes: datasets tank/mysql, tank/blob, tank/index,
#             thin volume vg0/redolog (ext4 on /srv/redolog)
#   standby:  tank/snapsite (unmounted parent of the ZFS replicas); the first
#             full receive creates each replica
# Uses the first two empty extra disks; without them, sparse files under
# /var/lib/snapsite-demo (ZFS file vdev; LVM on a loop device re-attached at
# boot by snapsite-demo-loop.service). Idempotent.
# Env: SNAPSITE_NODE=primary|standby
set -euo pipefail
export LC_ALL=C
NODE=${SNAPSITE_NODE:?}
DEMO=/var/lib/snapsite-demo
mkdir -p "$DEMO"

# whole disks with no partitions, no signature and nothing mounted
empty_disks() {
    local dev
    while read -r dev type; do
        [ "$type" = disk ] || continue
        [ "$(lsblk -nro NAME "$dev" | wc -l)" = 1 ] || continue   # has partitions
        [ -z "$(blkid -p "$dev" 2>/dev/null)" ] || continue        # has a signature
        echo "$dev"
    done < <(lsblk -dnpo NAME,TYPE)
}

if ! zpool list tank > /dev/null 2>&1; then
    if ! zpool import -d /dev tank 2> /dev/null && ! zpool import -d "$DEMO" tank 2> /dev/null; then
        mapfile -t disks < <(empty_disks)
        if [ ${#disks[@]} -ge 1 ]; then
            vdev=${disks[0]}
        else
            vdev=$DEMO/tank.img
            truncate -s 8G "$vdev"
        fi
        echo "storage: zpool tank on $vdev"
        zpool create -f -O compression=lz4 -O atime=off -O mountpoint=/srv/tank tank "$vdev"
    fi
fi
if [ "$NODE" = primary ]; then
    for ds in mysql blob index; do
        zfs list "tank/$ds" > /dev/null 2>&1 || zfs create "tank/$ds"
    done
else
    # parent of the replicas (`replica = "tank/snapsite/<role>"`): never mounted
    zfs list tank/snapsite > /dev/null 2>&1 || zfs create -o mountpoint=none tank/snapsite
fi

if ! vgs vg0 > /dev/null 2>&1; then
    mapfile -t disks < <(empty_disks)
    if [ ${#disks[@]} -ge 1 ]; then
        pv=${disks[0]}
    else
        truncate -s 8G "$DEMO/vg0.img"
        cat > /etc/systemd/system/snapsite-demo-loop.service <<UNIT
[Unit]
Description=snapsite demo: loop device under LVM VG vg0
DefaultDependencies=no
Before=lvm2-activation-early.service local-fs-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/losetup --find $DEMO/vg0.img
ExecStart=/sbin/vgchange -ay vg0
[Install]
WantedBy=local-fs-pre.target
UNIT
        systemctl daemon-reload
        systemctl enable snapsite-demo-loop.service
        pv=$(losetup --find --show "$DEMO/vg0.img")
    fi
    echo "storage: LVM VG vg0 on $pv"
    pvcreate -y "$pv"
    vgcreate vg0 "$pv"
fi
lvs vg0/pool > /dev/null 2>&1 || lvcreate -y -L 6G -T vg0/pool
if [ "$NODE" = primary ]; then
    if ! lvs vg0/redolog > /dev/null 2>&1; then
        lvcreate -y -V 2G -T vg0/pool -n redolog
        mkfs.ext4 -q /dev/vg0/redolog
    fi
    mkdir -p /srv/redolog
    grep -q '^/dev/vg0/redolog ' /etc/fstab || echo '/dev/vg0/redolog /srv/redolog ext4 defaults,nofail 0 2' >> /etc/fstab
    mountpoint -q /srv/redolog || mount /srv/redolog
fi
zfs list -o name,used,mountpoint -r tank
lvs vg0
