#!/usr/bin/env bash
# Installs the system packages the build, the demo and the tests need (Debian/Ubuntu).
# Idempotent: installs only what is missing. Run as root (or with sudo available).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have fusermount3 || need+=(fuse3)
have vim || need+=(vim)
have nano || need+=(nano)
have emacs || need+=(emacs-nox)
have tmux || need+=(tmux)
have git || need+=(git)
have tar || need+=(tar)
have setsid || need+=(util-linux)
have setpriv || need+=(util-linux)
have useradd || need+=(passwd)        # tests/usermount.rs creates an unprivileged user
have script || need+=(bsdutils)
have python3 || need+=(python3)
have cc || need+=(gcc)
have pkg-config || need+=(pkg-config)
have mkfs.vfat || need+=(dosfstools)
# A USB stick as most ship (exFAT): this kernel has no exfat module, so the tests use the FUSE
# driver on a loop image.
have mkfs.exfat || need+=(exfatprogs)
have mount.exfat-fuse || need+=(exfat-fuse)
have hyperfine || need+=(hyperfine)
have strace || need+=(strace)
have mkfifo || need+=(coreutils)
# `polykey id --age` and `--ssh` are checked against the real tools.
have age-keygen || need+=(age)
have ssh-keygen || need+=(openssh-client)

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install Rust (https://rustup.rs) first" >&2
    exit 1
fi
