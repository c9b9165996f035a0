#!/bin/sh
# The migration channel's small certificate authority, with the openssl CLI alone. The role walm.qemu.migration_tls
# runs it on the CA host, and the tests call it, so both make the same certificates.
#
#   walm-tls.sh ca   CA_DIR [--name "WALM migration CA"] [--days 3650] [--check]
#   walm-tls.sh host CA_DIR HOST --san NAME_OR_IP [--san ...] [--days 825] [--renew-days 30] [--check]
#
# ca makes CA_DIR/ca-key.pem (0600) and ca-cert.pem once. host issues HOST's key and certificate, signed by that CA,
# into CA_DIR/hosts/HOST/ in the layout of QEMU's tls-creds-x509 dir: ca-cert.pem, server-cert.pem, server-key.pem,
# client-cert.pem, client-key.pem. One key and one certificate serve both ends (extended key usage serverAuth and
# clientAuth); the subject is CN=HOST alone, so QEMU sees the client's distinguished name as "CN=HOST". A
# certificate is issued again when a file is missing, the request (name, addresses, days) changed, it no longer
# verifies against the CA, or it expires within --renew-days; otherwise nothing is touched.
#
# The last line printed is "changed: WHAT" or "ok: WHAT". --check prints what would change and writes nothing.
set -eu
umask 077

die() { echo "walm-tls.sh: $*" >&2; exit 1; }

command -v openssl >/dev/null 2>&1 || die "openssl is not installed on this host; install it (Debian: apt-get install openssl)"

[ $# -ge 2 ] || die "usage: walm-tls.sh ca CA_DIR [options] | walm-tls.sh host CA_DIR HOST --san ADDR [options]"
action=$1
ca_dir=$2
shift 2
host=
if [ "$action" = host ]; then
    [ $# -ge 1 ] || die "host needs the host's name after CA_DIR"
    host=$1
    shift
fi
name="WALM migration CA"
days=
renew_days=30
check=
sans=
while [ $# -gt 0 ]; do
    case $1 in
        --name) name=$2; shift 2 ;;
        --days) days=$2; shift 2 ;;
        --renew-days) renew_days=$2; shift 2 ;;
        --san) sans="$sans $2"; shift 2 ;;
        --check) check=1; shift ;;
        *) die "unknown argument $1" ;;
    esac
done

# Names go into openssl configuration files and subjects: allow only what needs no quoting there.
valid_name() { printf '%s' "$1" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]*$'; }
valid_ip() { printf '%s' "$1" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$'; }
case $renew_days in ''|*[!0-9]*) die "--renew-days must be a whole number of days, got '$renew_days'" ;; esac
case ${days:-1} in *[!0-9]*|0) die "--days must be a positive whole number, got '$days'" ;; esac

keygen() {
    # ECDSA P-256: quick to make, and what GnuTLS (QEMU's TLS library) prefers.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

make_ca() {
    [ -n "$days" ] || days=3650
    printf '%s' "$name" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' \
        || die "CA name '$name' may hold only letters, digits, spaces, '.', '_' and '-'"
    if [ -f "$ca_dir/ca-key.pem" ] && [ -f "$ca_dir/ca-cert.pem" ]; then
        openssl x509 -noout -in "$ca_dir/ca-cert.pem" >/dev/null 2>&1 \
            || die "$ca_dir/ca-cert.pem is not a certificate: restore it, or remove ca-key.pem and ca-cert.pem to make a new CA (every host then gets a new certificate)"
        echo "ok: CA $ca_dir/ca-cert.pem"
        return
    fi
    if [ -f "$ca_dir/ca-key.pem" ] || [ -f "$ca_dir/ca-cert.pem" ]; then
        die "$ca_dir holds only one of ca-key.pem and ca-cert.pem: restore the other, or remove both to make a new CA (every host then gets a new certificate)"
    fi
    if [ -n "$check" ]; then
        echo "changed: would create CA '$name' in $ca_dir"
        return
    fi
    mkdir -p "$ca_dir"
    chmod 0700 "$ca_dir"
    tmp=$(mktemp -d "$ca_dir/.ca.XXXXXX")
    cat > "$tmp/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext
[dn]
CN = $name
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    keygen "$tmp/ca-key.pem"
    openssl req -new -x509 -config "$tmp/ca.cnf" -key "$tmp/ca-key.pem" -days "$days" -sha256 \
        -set_serial "0x$(openssl rand -hex 15)" -out "$tmp/ca-cert.pem"
    chmod 0644 "$tmp/ca-cert.pem"
    mv "$tmp/ca-cert.pem" "$ca_dir/ca-cert.pem"
    mv "$tmp/ca-key.pem" "$ca_dir/ca-key.pem"
    rm -rf "$tmp"
    echo "changed: created CA '$name' in $ca_dir"
}

host_request() {
    # The request, as the configuration file openssl reads: kept beside the certificate to tell whether it changed.
    alt=
    for san in $sans; do
        if valid_ip "$san"; then alt="$alt, IP:$san"
        elif valid_name "$san"; then alt="$alt, DNS:$san"
        else die "subject alternative name '$san' is neither an IP address nor a host name"
        fi
    done
    cat <<EOF
# walm-tls.sh request for $host, valid $days days
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $host
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = ${alt#, }
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EOF
}

host_current() {
    # Empty when the host's files are complete, asked for the same, signed by this CA and not about to expire;
    # otherwise why a certificate must be issued.
    dir=$1
    [ -d "$dir" ] || { echo "none yet"; return; }
    for f in ca-cert.pem server-cert.pem server-key.pem client-cert.pem client-key.pem request.cnf; do
        [ -f "$dir/$f" ] || { echo "$f is missing"; return; }
    done
    host_request | cmp -s - "$dir/request.cnf" || { echo "the request changed"; return; }
    cmp -s "$ca_dir/ca-cert.pem" "$dir/ca-cert.pem" || { echo "the CA changed"; return; }
    openssl verify -CAfile "$ca_dir/ca-cert.pem" "$dir/server-cert.pem" >/dev/null 2>&1 \
        || { echo "it does not verify against the CA"; return; }
    openssl x509 -noout -checkend $((renew_days * 86400)) -in "$dir/server-cert.pem" >/dev/null 2>&1 \
        || { echo "it expires within $renew_days days"; return; }
}

make_host() {
    [ -n "$days" ] || days=825
    valid_name "$host" || die "host name '$host' may hold only letters, digits, '.', '_' and '-', starting with a letter or digit"
    [ -n "$sans" ] || die "host $host needs at least one --san (its name or migration address)"
    if ! [ -f "$ca_dir/ca-key.pem" ] || ! [ -f "$ca_dir/ca-cert.pem" ]; then
        # In check mode the CA may be one that this run would make first.
        [ -z "$check" ] || { echo "changed: would issue a certificate for $host (no CA yet)"; return; }
        die "no CA in $ca_dir (ca-key.pem, ca-cert.pem): make it first with 'walm-tls.sh ca $ca_dir'"
    fi
    dir="$ca_dir/hosts/$host"
    why=$(host_current "$dir")
    if [ -z "$why" ]; then
        echo "ok: certificate of $host in $dir"
        return
    fi
    if [ -n "$check" ]; then
        echo "changed: would issue a certificate for $host ($why)"
        return
    fi
    mkdir -p "$ca_dir/hosts"
    tmp=$(mktemp -d "$ca_dir/hosts/.$host.XXXXXX")
    host_request > "$tmp/request.cnf"
    keygen "$tmp/server-key.pem"
    openssl req -new -config "$tmp/request.cnf" -key "$tmp/server-key.pem" -out "$tmp/request.csr"
    openssl x509 -req -in "$tmp/request.csr" -CA "$ca_dir/ca-cert.pem" -CAkey "$ca_dir/ca-key.pem" \
        -set_serial "0x$(openssl rand -hex 15)" -days "$days" -sha256 \
        -extfile "$tmp/request.cnf" -extensions ext -out "$tmp/server-cert.pem" 2>/dev/null
    rm -f "$tmp/request.csr"
    cp "$ca_dir/ca-cert.pem" "$tmp/ca-cert.pem"
    cp "$tmp/server-cert.pem" "$tmp/client-cert.pem"
    cp "$tmp/server-key.pem" "$tmp/client-key.pem"
    chmod 0644 "$tmp/ca-cert.pem" "$tmp/server-cert.pem" "$tmp/client-cert.pem" "$tmp/request.cnf"
    chmod 0700 "$tmp"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    echo "changed: issued a certificate for $host in $dir ($why)"
}

case $action in
    ca) make_ca ;;
    host) make_host ;;
    *) die "unknown action '$action': use ca or host" ;;
esac
