#!/bin/bash
# Vagrant provisioning, step 4 of 4: root ssh between primary and standby.
# The key pairs are made by the Vagrantfile on the host (vagrant/.keys/); this
# installs this node's private key, authorizes the peer's public key, and adds
# both names to /etc/hosts. snapsite ships with
# `ssh -o BatchMode=yes <peer> snapsite serve --stdio`.
# Env (from the Vagrantfile): SNAPSITE_NODE SNAPSITE_PEER SNAPSITE_HOSTS
#      SNAPSITE_OWN_KEY SNAPSITE_OWN_PUB SNAPSITE_PEER_PUB
set -euo pipefail
: "${SNAPSITE_NODE:?}" "${SNAPSITE_PEER:?}" "${SNAPSITE_HOSTS:?}"
: "${SNAPSITE_OWN_KEY:?}" "${SNAPSITE_OWN_PUB:?}" "${SNAPSITE_PEER_PUB:?}"

install -d -m 0700 /root/.ssh
umask 077
printf '%s\n' "$SNAPSITE_OWN_KEY" > /root/.ssh/id_rsa
printf '%s\n' "$SNAPSITE_OWN_PUB" > /root/.ssh/id_rsa.pub
touch /root/.ssh/authorized_keys
grep -qxF "$SNAPSITE_PEER_PUB" /root/.ssh/authorized_keys || printf '%s\n' "$SNAPSITE_PEER_PUB" >> /root/.ssh/authorized_keys
# first contact with the peer records its host key (lab network only)
cat > /root/.ssh/config <<CFG
Host primary standby
    User root
    IdentityFile /root/.ssh/id_rsa
    StrictHostKeyChecking accept-new
CFG
umask 022
while read -r addr name; do
    awk -v a="$addr" -v n="$name" '$1 == a && $2 == n { found = 1 } END { exit !found }' /etc/hosts ||
        echo "$addr $name" >> /etc/hosts
done <<< "$SNAPSITE_HOSTS"
# root login by key only (Debian's default is prohibit-password already)
sed -i 's/^#\?PermitRootLogin .*/PermitRootLogin prohibit-password/' /etc/ssh/sshd_config
systemctl reload ssh
echo "ssh: $SNAPSITE_NODE trusts $SNAPSITE_PEER; try: ssh $SNAPSITE_PEER hostname"
