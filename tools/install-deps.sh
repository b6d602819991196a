#!/bin/sh
# install-deps.sh - install everything Volley needs to build, test and benchmark on
# Debian 12 (run as root).  Postfix is installed only for its smtp-sink and
# smtp-source test tools: debconf is preseeded to "No configuration", so no system
# MTA is configured or started.
set -eu
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (it calls apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get install -y -q --no-install-recommends \
    build-essential cmake pkg-config clang \
    libevent-dev libssl-dev libc-ares-dev liblmdb-dev lmdb-utils libjansson-dev \
    libconfig-dev libcmocka-dev libidn2-dev libsodium-dev libpsl-dev \
    python3 python3-pytest python3-aiosmtpd python3-dkim opendkim-tools \
    postfix swaks dnsmasq-base bind9-dnsutils iproute2 procps time openssl util-linux
