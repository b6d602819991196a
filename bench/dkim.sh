#!/bin/sh
# dkim.sh [SECONDS] [MSGSIZE] - build bench_dkim (Release) and print the DKIM signing
# rate of one thread for rsa-sha256 (2048) and ed25519-sha256 on MSGSIZE-octet
# messages (default 4096), next to `openssl speed -seconds 3 rsa2048 ed25519` on
# the same machine (its sign/s column) and the ratio.  bench_dkim also times the
# bare OpenSSL signature (and for Ed25519 the bare libsodium one, which volleyd
# signs with) in slices interleaved with its own, ratios that hold on a loaded
# machine, and the signing of another recipient's copy of the same message (body
# hash reused, "copy sign/s").  Keys are generated into a temporary directory and
# removed.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${VOLLEY_BENCH_BUILD:-$top/build-bench-dkim}
secs=${1:-3}
size=${2:-4096}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_dkim >/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rsa2048.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$tmp/ed25519.pem" 2>/dev/null
echo "bench_dkim: $(nproc) CPU(s), $(uname -sr), $(openssl version), one thread, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench_dkim" -t "$secs" -s "$size" "$tmp/rsa2048.pem" "$tmp/ed25519.pem" >"$tmp/dkim.out"
openssl speed -seconds 3 rsa2048 ed25519 2>/dev/null >"$tmp/speed.out"
rsa_speed=$(awk '/^rsa 2048 bits/ {print $(NF-1)}' "$tmp/speed.out")
ed_speed=$(awk '/EdDSA \(Ed25519\)/ {print $(NF-1)}' "$tmp/speed.out")
awk -v rsa="$rsa_speed" -v ed="$ed_speed" '
    $1 == "dkim"   { d[$2] = $6 }
    $1 == "raw"    { r[$2] = $6 }
    $1 == "sodium" { l[$2] = $6 }
    $1 == "copy"   { c[$2] = $6 }
    function row(name, a, speed) {
        printf "%-16s %11.0f %13.0f %6.3f %13.0f %6.3f", name, d[a], speed, d[a] / speed, r[a], d[a] / r[a]
        if (a in l) printf " %13.0f %6.3f", l[a], d[a] / l[a]
        else printf " %13s %6s", "-", "-"
        printf " %11.0f\n", c[a]
    }
    END {
        printf "%-16s %11s %13s %6s %13s %6s %13s %6s %11s\n", "algorithm", "dkim sign/s", "openssl speed", "ratio",
            "interleaved", "ratio", "libsodium", "ratio", "copy sign/s"
        row("rsa-sha256 2048", "rsa-sha256", rsa)
        row("ed25519-sha256", "ed25519-sha256", ed)
    }' "$tmp/dkim.out"
tail -n 1 "$tmp/dkim.out"
