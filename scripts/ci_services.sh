#!/usr/bin/env bash
# Install what the zoo tests need from the system: the PostgreSQL server binaries (initdb, pg_ctl).
# tests/test_zoo.py starts its own throw-away server on 127.0.0.1 (a free port, a temporary data
# folder) and stops it; nothing is started here. Where the binaries cannot be installed (no root,
# no apt-get, no network) this warns and exits 0, and the PostgreSQL test is skipped with that reason.
set -uo pipefail

have_postgres_server() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null 2>&1
}

if have_postgres_server; then
    echo "ci_services: PostgreSQL server binaries present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_services: WARNING: no PostgreSQL server and no apt-get; the PostgreSQL test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ci_services: WARNING: not root and no password-less sudo; cannot install PostgreSQL, its test will be skipped" >&2
        exit 0
    fi
fi

echo "ci_services: installing PostgreSQL (Debian package postgresql)"
# The tests run their own server: ask Debian's package not to create and start a default cluster.
$SUDO mkdir -p /etc/postgresql-common
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
# UCF_FORCE_CONFFOLD keeps that file when the package installs its own copy.
APT=($SUDO env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
if "${APT[@]}" update -qq && "${APT[@]}" install -y -qq --no-install-recommends postgresql >/dev/null; then
    if have_postgres_server; then
        echo "ci_services: PostgreSQL installed: $(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | head -n 1)"
        exit 0
    fi
fi
echo "ci_services: WARNING: installing PostgreSQL failed; the PostgreSQL test will be skipped" >&2
exit 0
