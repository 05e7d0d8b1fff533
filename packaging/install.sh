#!/bin/sh
# packaging/install.sh: installs golive for one user, without root, into
# ~/.local (issue 16). Idempotent: a second run changes nothing that is
# already in place, and never overwrites your agent config.
#
#   packaging/install.sh [--bin-dir DIR] [--prefix DIR]
#
# --bin-dir  where golive-agent and golivectl are (default: the first of
#            ../target/release, .., ../bin next to this script that has both)
# --prefix   where to install (default: ~/.local)
#
# Installs: PREFIX/bin/{golive-agent,golivectl}; bash completion into
# PREFIX/share/bash-completion/completions; man pages into
# PREFIX/share/man/man1; ~/.config/golive/agent.toml.example, and
# ~/.config/golive/agent.toml from it when there is none. Prints the
# crontab lines to add (cron mode); it does not edit your crontab.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix="$HOME/.local"
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --prefix) prefix="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$bin_dir" ]; then
    for d in "$here/../target/release" "$here/.." "$here/../bin"; do
        if [ -x "$d/golive-agent" ] && [ -x "$d/golivectl" ]; then
            bin_dir=$d
            break
        fi
    done
fi
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/golive-agent" ] || [ ! -x "$bin_dir/golivectl" ]; then
    echo "install.sh: golive-agent and golivectl not found${bin_dir:+ in $bin_dir};" \
        "build them (cargo build --release) or pass --bin-dir DIR" >&2
    exit 2
fi
if [ "$(id -u)" = 0 ]; then
    echo "install.sh: note: running as root installs into $prefix for root only;" \
        "the agent's systemd unit is in systemd/" >&2
fi

config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/golive"
state_dir="$HOME/.local/state/golive-agent"
changed=0

# put SRC DEST MODE: copies when DEST is missing or differs.
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        echo "unchanged  $2"
    else
        mkdir -p "$(dirname "$2")"
        tmp="$2.install-$$"
        cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2"
        echo "installed  $2"
        changed=1
    fi
}

put "$bin_dir/golive-agent" "$prefix/bin/golive-agent" 0755
put "$bin_dir/golivectl" "$prefix/bin/golivectl" 0755

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$prefix/bin/golivectl" completions bash >"$work/golivectl.bash"
put "$work/golivectl.bash" "$prefix/share/bash-completion/completions/golivectl" 0644
"$prefix/bin/golivectl" man --dir "$work/man" >/dev/null
for page in "$work"/man/*.1; do
    put "$page" "$prefix/share/man/man1/$(basename "$page")" 0644
done

sed "s|@HOME@|$HOME|g" "$here/agent.example.toml" >"$work/agent.toml.example"
put "$work/agent.toml.example" "$config_dir/agent.toml.example" 0644
if [ -e "$config_dir/agent.toml" ]; then
    echo "kept       $config_dir/agent.toml (yours; compare with agent.toml.example)"
else
    put "$work/agent.toml.example" "$config_dir/agent.toml" 0600
fi
mkdir -p "$config_dir/tls" "$state_dir"
chmod 0700 "$config_dir/tls" "$state_dir"

if [ "$changed" = 0 ]; then
    echo "golive is installed in $prefix; nothing changed"
else
    echo "golive installed in $prefix"
fi
case ":$PATH:" in
    *":$prefix/bin:"*) ;;
    *) echo "add $prefix/bin to your PATH (e.g. in ~/.profile)" ;;
esac
cat <<CRON

Next: put the agent's certificate in $config_dir/tls, edit $config_dir/agent.toml,
check it with
  $prefix/bin/golive-agent check-config --config $config_dir/agent.toml
then add these two lines with \`crontab -e\` (cron mode: the agent is started,
and restarted after a crash or a reboot, within a minute):

* * * * * $prefix/bin/golive-agent ensure-running --config $config_dir/agent.toml >/dev/null 2>>$state_dir/ensure-running.err
@reboot   $prefix/bin/golive-agent ensure-running --config $config_dir/agent.toml >/dev/null 2>>$state_dir/ensure-running.err
CRON
