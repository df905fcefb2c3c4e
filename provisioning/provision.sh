#!/usr/bin/env bash
# comfyfleet provisioning: make a ComfyUI install ready for a workflow (models + custom nodes).
#
# Runs ON the instance (uploaded by the control plane over SFTP). Idempotent: a second run skips
# everything that is present and verified, at the cost of a few stat() calls.
#
# Usage: bash provision.sh PLAN_FILE [--comfy-dir DIR] [--token-stdin]
#   --token-stdin   read the Hugging Face token from the first line of stdin (never from argv).
#                   Without it, $HF_TOKEN from the environment is used if set. Either way it is kept in
#                   an unexported shell variable, handed to curl only through a config read from a pipe
#                   (`curl -K -`), sent only to the plan's token hosts, and never printed.
#
# Plan file: UTF-8 text, one record per line, fields separated by a single TAB, `-` = empty, `#` comments.
#   set    <key>    <value>
#   model  <folder> <name> <size> <sha256|-> <url> [<fallback url>|-]
#          size: exact bytes, or ~bytes when approximate; the fallback URL (e.g. the Hub behind an R2
#          mirror's presigned URL) is used when the first one fails or its bytes fail verification
#   node   <name>   <git_url> <commit>
# Keys (defaults): comfy_dir (/workspace/ComfyUI), parallel (4), python (auto), pip (1),
#   restart (auto: $COMFY_DIR/.comfyfleet/restart hook if executable, else supervisorctl restart comfyui
#   if present, else none; - = none), comfy_url (-: after a restart, wait until it answers),
#   restart_timeout (300), min_free (1073741824), boot_wait (0: seconds to wait for the image's boot:
#   main.py present and boot_marker gone, before touching comfy_dir), boot_marker (-), token_hosts
#   (huggingface.co), retries (6 consecutive attempts without progress), backoff (1 s, doubles, max 30),
#   connect_timeout (20), stall_timeout (60 s below 1 KB/s), progress_interval (1), tool (auto|curl|wget),
#   connections (8 per file), max_connections (16 for the whole run), segment_size (67108864 bytes):
#   with curl, a file of exact size larger than one segment is fetched over several connections.
#
# Output: JSON lines on stdout (events begin, plan, skipped, start, progress, retry, done, error, node_*,
# restart*, comfy_ready, summary). Diagnostics on stderr. Exit codes:
#   0 ok, 2 bad plan/usage, 10 not enough disk, 11 download failed, 12 verification failed,
#   13 needs an HF token, 14 custom node install failed, 15 ComfyUI restart failed, 16 missing tool,
#   17 another provisioning run holds the lock, 18 the image did not finish booting (boot_wait).
# A verified model has a sidecar `.<name>.verified` next to it (size, sha256 or size-only, source, mtime).

set -u -o pipefail
umask 022

E_USAGE=2 E_DISK=10 E_DOWNLOAD=11 E_VERIFY=12 E_TOKEN=13 E_NODE=14 E_RESTART=15 E_TOOL=16 E_LOCKED=17 E_BOOT=18

PLAN="" TOKEN_STDIN=0 COMFY_DIR_ARG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --plan) PLAN=${2:-}; shift 2 ;;
        --comfy-dir) COMFY_DIR_ARG=${2:-}; shift 2 ;;
        --token-stdin) TOKEN_STDIN=1; shift ;;
        -*) echo "unknown option $1" >&2; exit $E_USAGE ;;
        *) PLAN=$1; shift ;;
    esac
done

HF_TOKEN_VAL=""
if [ "$TOKEN_STDIN" = 1 ]; then
    IFS= read -r HF_TOKEN_VAL || true
fi
if [ -z "$HF_TOKEN_VAL" ] && [ -n "${HF_TOKEN:-}" ]; then
    HF_TOKEN_VAL=$HF_TOKEN
fi
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN
exec </dev/null

# --- JSON output --------------------------------------------------------------------------------
# jstr VALUE: sets REPLY to VALUE as a JSON string literal (no subshell).
jstr() {
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
    REPLY="\"$s\""
}
emit() { printf '%s\n' "$1"; }
log() { printf '%s\n' "$*" >&2; }

now_us() {
    if [ -n "${EPOCHREALTIME:-}" ]; then REPLY=${EPOCHREALTIME/[.,]/}; else REPLY=$(( $(date +%s) * 1000000 )); fi
}

fatal() { # code message
    jstr "$2"
    emit "{\"event\":\"error\",\"code\":$1,\"message\":$REPLY}"
    emit "{\"event\":\"summary\",\"ok\":false,\"exit_code\":$1,\"message\":$REPLY}"
    exit "$1"
}

[ -n "$PLAN" ] && [ -r "$PLAN" ] || fatal $E_USAGE "plan file not readable: ${PLAN:-<none>}"

# --- plan ---------------------------------------------------------------------------------------
COMFY_DIR=/workspace/ComfyUI PARALLEL=4 PY=auto PIP=1 RESTART=auto COMFY_URL=- RESTART_TIMEOUT=300
MIN_FREE=1073741824 TOKEN_HOSTS=huggingface.co RETRIES=6 BACKOFF=1 CONNECT_TIMEOUT=20 STALL_TIMEOUT=60
PROGRESS_INTERVAL=1 TOOL=auto CONNECTIONS=8 MAX_CONNECTIONS=16 SEGMENT_SIZE=67108864
BOOT_WAIT=0 BOOT_MARKER=-
M_FOLDER=() M_JFOLDER=() M_NAME=() M_SIZE=() M_EXACT=() M_SHA=() M_URL=() M_CRED=() M_FB_URL=() M_FB_CRED=()
N_NAME=() N_URL=() N_COMMIT=()

safe_name() { # a single path component, no traversal, no hidden files
    case "$1" in ''|.*|*/*|*$'\n'*) return 1 ;; esac
    return 0
}
safe_path() { # a relative path of safe_name components ("loras", "loras/wan"), as manifests allow
    local c parts
    case "$1" in ''|/*|*/) return 1 ;; esac
    IFS=/ read -r -a parts <<<"$1"
    for c in "${parts[@]}"; do safe_name "$c" || return 1; done
    return 0
}
# url_split URL: REPLY = URL without user info; URL_CRED = its percent-decoded "user:password" ("" if none).
# Credentials go to curl/wget through a config, never argv (ps) nor the sidecars (disk).
url_split() {
    local u=$1 rest auth d
    REPLY=$u URL_CRED=""
    case "$u" in *://*) ;; *) return 0 ;; esac
    rest=${u#*://}
    auth=${rest%%[/?#]*}
    case "$auth" in *@*) ;; *) return 0 ;; esac
    d=${auth%@*}
    d=${d//\\/\\\\}
    printf -v URL_CRED '%b' "${d//%/\\x}"
    case "$URL_CRED" in *[$'\n\r']*) return 1 ;; esac  # would inject lines into the tool's config
    REPLY="${u%%://*}://${auth##*@}${rest:${#auth}}"
}
is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; return 0; }

lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%$'\r'}
    case "$line" in ''|'#'*) continue ;; esac
    IFS=$'\t' read -r kind f1 f2 f3 f4 f5 f6 <<<"$line"
    [ "${f2:-}" = "-" ] && f2=""
    case "$kind" in
        set)
            case "$f1" in
                comfy_dir) COMFY_DIR=$f2 ;;
                parallel) PARALLEL=$f2 ;;
                python) PY=$f2 ;;
                pip) PIP=$f2 ;;
                restart) RESTART=${f2:--} ;;  # "-" = never restart
                comfy_url) COMFY_URL=${f2:--} ;;
                restart_timeout) RESTART_TIMEOUT=$f2 ;;
                min_free) MIN_FREE=$f2 ;;
                token_hosts) TOKEN_HOSTS=$f2 ;;
                retries) RETRIES=$f2 ;;
                backoff) BACKOFF=$f2 ;;
                connect_timeout) CONNECT_TIMEOUT=$f2 ;;
                stall_timeout) STALL_TIMEOUT=$f2 ;;
                progress_interval) PROGRESS_INTERVAL=$f2 ;;
                tool) TOOL=$f2 ;;
                connections) CONNECTIONS=$f2 ;;
                max_connections) MAX_CONNECTIONS=$f2 ;;
                segment_size) SEGMENT_SIZE=$f2 ;;
                boot_wait) BOOT_WAIT=$f2 ;;
                boot_marker) BOOT_MARKER=${f2:--} ;;
                *) log "plan line $lineno: unknown setting '$f1' ignored" ;;
            esac
            ;;
        model)
            size=${f3:-}
            exact=1
            case "$size" in '~'*) exact=0; size=${size#\~} ;; esac
            if ! safe_path "$f1" || ! safe_name "$f2" || ! is_uint "$size" || [ -z "${f5:-}" ]; then
                fatal $E_USAGE "plan line $lineno: bad model record"
            fi
            sha=${f4:--}
            case "$sha" in
                -) ;;
                *[!0-9a-fA-F]*) fatal $E_USAGE "plan line $lineno: sha256 must be 64 hex digits" ;;
                *) [ ${#sha} = 64 ] || fatal $E_USAGE "plan line $lineno: sha256 must be 64 hex digits" ;;
            esac
            jstr "$f1"; M_JFOLDER+=("$REPLY")  # the folder as a JSON string, for every event naming it
            M_FOLDER+=("$f1"); M_NAME+=("$f2"); M_SIZE+=("$size"); M_EXACT+=("$exact")
            url_split "$f5" || fatal $E_USAGE "plan line $lineno: bad model record (control character in the URL's user info)"
            M_SHA+=("${sha,,}"); M_URL+=("$REPLY"); M_CRED+=("$URL_CRED")
            fb=${f6:--}; [ "$fb" = - ] && fb=""
            url_split "$fb" || fatal $E_USAGE "plan line $lineno: bad model record (control character in the fallback URL's user info)"
            M_FB_URL+=("$REPLY"); M_FB_CRED+=("$URL_CRED")
            ;;
        node)
            if ! safe_name "$f1" || [ -z "${f2:-}" ] || [ -z "${f3:-}" ]; then
                fatal $E_USAGE "plan line $lineno: bad node record"
            fi
            N_NAME+=("$f1"); N_URL+=("$f2"); N_COMMIT+=("$f3")
            ;;
        *) fatal $E_USAGE "plan line $lineno: unknown record '$kind'" ;;
    esac
done <"$PLAN"

[ -n "$COMFY_DIR_ARG" ] && COMFY_DIR=$COMFY_DIR_ARG
# "~/..." = under the login user's home (a user's own box, or a simulated instance's sandbox).
case $COMFY_DIR in "~/"*) COMFY_DIR="$HOME/${COMFY_DIR#"~/"}" ;; "~") COMFY_DIR=$HOME ;; esac
is_uint "$PARALLEL" && [ "$PARALLEL" -ge 1 ] || PARALLEL=4
is_uint "$RETRIES" && [ "$RETRIES" -ge 1 ] || RETRIES=6
is_uint "$CONNECTIONS" && [ "$CONNECTIONS" -ge 1 ] || CONNECTIONS=8
is_uint "$MAX_CONNECTIONS" && [ "$MAX_CONNECTIONS" -ge 1 ] || MAX_CONNECTIONS=16
[ "$MAX_CONNECTIONS" -le 1000 ] || MAX_CONNECTIONS=1000
is_uint "$SEGMENT_SIZE" && [ "$SEGMENT_SIZE" -ge 65536 ] || SEGMENT_SIZE=67108864
PROGRESS_US=$(awk -v s="$PROGRESS_INTERVAL" 'BEGIN { u = int(s * 1000000); print (u >= 100000 ? u : 1000000) }')
MODELS="$COMFY_DIR/models"
STATE_DIR="$COMFY_DIR/.comfyfleet"
home_path() { case $1 in "~/"*) REPLY="$HOME/${1#"~/"}" ;; *) REPLY=$1 ;; esac; }
home_path "$BOOT_MARKER"; BOOT_MARKER=$REPLY
home_path "$PY"; PY=$REPLY

# --- wait for the image's own boot --------------------------------------------------------------
# Vast's ComfyUI image copies ComfyUI into the workspace only when the target folder does not exist yet,
# and SSH answers before that copy: creating $COMFY_DIR/models now would leave the instance without
# ComfyUI. Touch nothing until main.py is there and the image's provisioning marker is gone.
is_uint "$BOOT_WAIT" || BOOT_WAIT=0
if [ "$BOOT_WAIT" -gt 0 ]; then
    now_us; boot_deadline=$(( REPLY + BOOT_WAIT * 1000000 )); boot_t0=$REPLY; boot_said=0
    while [ ! -f "$COMFY_DIR/main.py" ] || { [ "$BOOT_MARKER" != - ] && [ -e "$BOOT_MARKER" ]; }; do
        if [ "$boot_said" = 0 ]; then emit '{"event":"boot_wait"}'; boot_said=1; fi
        now_us
        if [ "$REPLY" -ge "$boot_deadline" ]; then
            if [ -f "$COMFY_DIR/main.py" ]; then why="the image's boot marker $BOOT_MARKER is still there"
            else why="$COMFY_DIR/main.py does not exist"; fi
            fatal $E_BOOT "the image did not finish booting within ${BOOT_WAIT}s: $why"
        fi
        sleep 0.2
    done
    now_us
    [ "$boot_said" = 1 ] && emit "{\"event\":\"boot_done\",\"ms\":$(( (REPLY - boot_t0) / 1000 ))}"
fi

mkdir -p "$MODELS" "$COMFY_DIR/custom_nodes" "$STATE_DIR/nodes" ||
    fatal $E_USAGE "cannot create directories under $COMFY_DIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/comfyfleet-prov.XXXXXX") || fatal $E_USAGE "mktemp failed"
RESULTS="$WORK/results"
: >"$RESULTS"

# nap SECONDS: a fractional sleep without forking (read with a timeout on a fifo nobody writes).
if mkfifo "$WORK/nap" 2>/dev/null && exec {NAPFD}<>"$WORK/nap"; then
    nap() { read -r -t "$1" -u "$NAPFD" _ 2>/dev/null; return 0; }
else
    nap() { sleep "$1" 2>/dev/null || sleep 1; }
fi

on_exit() { rm -rf "$WORK"; }
kill_tree() { # TERM every descendant of pid $1 (children first, then the process itself)
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$c"; done
    [ "$1" = "$$" ] || kill -TERM "$1" 2>/dev/null
}
on_term() {
    # Stop the downloads first, and ignore PIPE/HUP: the control plane may have closed the channel
    # already, and a log line written into a closed pipe would kill us (SIGPIPE) before the kill below.
    trap '' TERM INT PIPE HUP
    kill_tree $$
    kill -TERM $(jobs -p) 2>/dev/null
    rm -rf "$WORK"
    log "provisioning interrupted" 2>/dev/null
    exit 143
}
trap on_exit EXIT
trap on_term TERM INT HUP PIPE  # PIPE/HUP: the control plane went away

# One provisioning run at a time per ComfyUI dir (a retried job must not race a still-running one).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/provision.lock"
    flock -w 5 9 || fatal $E_LOCKED "another provisioning run is in progress on $COMFY_DIR"
fi

# --- tools --------------------------------------------------------------------------------------
if [ "$TOOL" = auto ]; then
    if command -v curl >/dev/null 2>&1; then TOOL=curl
    elif command -v wget >/dev/null 2>&1; then TOOL=wget
    else TOOL=none; fi
fi

fsize() { # sets REPLY to the size of $1 (0 when missing)
    REPLY=0
    [ -e "$1" ] || return 0
    REPLY=$(stat -c %s -- "$1" 2>/dev/null || wc -c <"$1" | tr -d ' ')
}
fmtime() { REPLY=$(stat -c %Y -- "$1" 2>/dev/null || echo 0); }

sha256_of() {
    local h
    if command -v sha256sum >/dev/null 2>&1; then read -r h _ < <(sha256sum -- "$1")
    elif command -v shasum >/dev/null 2>&1; then read -r h _ < <(shasum -a 256 -- "$1")
    else read -r h _ < <(openssl dgst -sha256 -r -- "$1"); fi
    REPLY=${h,,}
}

# host_of URL -> REPLY (lowercase host, no port, no userinfo)
host_of() {
    local h=${1#*://}
    h=${h%%/*}; h=${h%%\?*}; h=${h%%#*}; h=${h##*@}  # "a.com#@hub" and "a.com?@hub" go to a.com
    case "$h" in \[*) h=${h%%]*}; h=${h#\[} ;; *) h=${h%%:*} ;; esac
    REPLY=${h,,}
}
token_for() { # 0 when the token may be sent to URL $1
    [ -n "$HF_TOKEN_VAL" ] || return 1
    local host
    host_of "$1"; host=$REPLY
    local IFS=,
    for h in $TOKEN_HOSTS; do [ "$host" = "${h,,}" ] && return 0; done
    return 1
}
curl_cfg() { # token(0|1) i cred(0|1): curl config on stdout (to a pipe; builtin printf never execs, so
    local t   # nothing shows in ps): the HF token and/or the URL's own user:password
    if [ "$1" = 1 ]; then
        t=${HF_TOKEN_VAL//\\/\\\\}; t=${t//\"/\\\"}
        printf 'header = "Authorization: Bearer %s"\n' "$t"
    fi
    if [ "$3" = 1 ] && [ -n "${M_CRED[$2]}" ]; then
        t=${M_CRED[$2]//\\/\\\\}; t=${t//\"/\\\"}
        printf 'user = "%s"\n' "$t"
    fi
    return 0
}
cfg_str() { # VALUE -> REPLY = VALUE as a double-quoted curl config string
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; s=${s//$'\r'/\\r}; s=${s//$'\n'/\\n}
    REPLY="\"$s\""
}
url_cfg() { # URL: curl config lines naming it (builtin printf into the pipe: the URL stays out of ps)
    cfg_str "$1"
    printf 'globoff\nurl = %s\n' "$REPLY"
}

# --- results ------------------------------------------------------------------------------------
record() { # kind status name bytes code message
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6//$'\t'/ }" >>"$RESULTS"
}
model_error() { # i code kind retryable message
    local jn jm
    # While the file still has a fallback source, a failure of this source is not the file's error:
    # fetch_model switches to the fallback (use_fallback) and tells why.
    if [ "${FB_ARMED:-0}" = 1 ] && [ -n "${M_FB_URL[$1]}" ]; then
        case "$2" in "$E_DOWNLOAD"|"$E_TOKEN"|"$E_VERIFY") FALLBACK_REASON=$5; return 0 ;; esac
    fi
    jstr "${M_NAME[$1]}"; jn=$REPLY
    jstr "$5"; jm=$REPLY
    emit "{\"event\":\"error\",\"file\":$jn,\"folder\":${M_JFOLDER[$1]},\"code\":$2,\"kind\":\"$3\",\"retryable\":$4,\"message\":$jm}"
    record model error "${M_NAME[$1]}" 0 "$2" "$5"
}

# --- verification -------------------------------------------------------------------------------
# verify PATH i -> 0 ok (VERIFIED_SHA set) / 1 (VERIFY_ERR set)
verify() { # PATH i [precomputed sha256]
    local f=$1 i=$2 pre=${3:-} size want=${M_SIZE[$2]} name=${M_NAME[$2]}
    VERIFY_ERR="" VERIFIED_SHA=""
    fsize "$f"; size=$REPLY
    if [ "${M_EXACT[$i]}" = 1 ] && [ "$size" != "$want" ]; then
        VERIFY_ERR="size is $size bytes, expected $want"; return 1
    fi
    [ "$size" -gt 0 ] || { VERIFY_ERR="file is empty"; return 1; }
    case "$name" in
        *.gguf)
            local magic
            magic=$(head -c 4 -- "$f" 2>/dev/null)
            [ "$magic" = GGUF ] || { VERIFY_ERR="not a GGUF file (bad magic)"; return 1; }
            ;;
        *.safetensors)
            local hlen first
            hlen=$(od -An -tu8 -N8 -- "$f" 2>/dev/null | tr -d ' \n')
            first=$(od -An -c -j8 -N1 -- "$f" 2>/dev/null | tr -d ' \n')
            # ${#hlen} first: a u64 past 2^63 breaks [ -gt ] and wraps in $(( )); the cap has 9 digits.
            if ! is_uint "$hlen" || [ "${#hlen}" -gt 9 ] || [ "$hlen" -lt 2 ] || [ $((hlen + 8)) -gt "$size" ] ||
                [ "$hlen" -gt 104857600 ] || [ "$first" != "{" ]; then
                VERIFY_ERR="not a safetensors file (bad header)"; return 1
            fi
            ;;
    esac
    if [ -n "$pre" ]; then REPLY=$pre; else sha256_of "$f"; fi
    if [ "${M_SHA[$i]}" != - ] && [ "$REPLY" != "${M_SHA[$i]}" ]; then
        VERIFY_ERR="sha256 mismatch (got $REPLY, expected ${M_SHA[$i]})"; return 1
    fi
    VERIFIED_SHA=$REPLY
    return 0
}

write_sidecar() { # i dest
    local i=$1 dest=$2 side size mtime sha=$VERIFIED_SHA
    side="$(dirname -- "$dest")/.${M_NAME[$i]}.verified"
    fsize "$dest"; size=$REPLY
    fmtime "$dest"; mtime=$REPLY
    [ -n "$sha" ] || sha=size-only
    printf 'size=%s\nsha256=%s\nsource=%s\nmtime=%s\nverified_at=%s\n' \
        "$size" "$sha" "${M_URL[$i]%%\?*}" "$mtime" "$(date +%s)" >"$side.tmp" && mv -f "$side.tmp" "$side"
}

# sidecar_ok i: the file is present and was verified for this plan entry; costs two stats.
sidecar_ok() {
    local i=$1 dest="$MODELS/${M_FOLDER[$1]}/${M_NAME[$1]}"
    local side="$MODELS/${M_FOLDER[$1]}/.${M_NAME[$1]}.verified"
    [ -f "$dest" ] && [ -f "$side" ] || return 1
    local k v s_size="" s_sha="" s_mtime="" size mtime
    while IFS='=' read -r k v; do
        case "$k" in size) s_size=$v ;; sha256) s_sha=$v ;; mtime) s_mtime=$v ;; esac
    done <"$side"
    fsize "$dest"; size=$REPLY
    fmtime "$dest"; mtime=$REPLY
    [ "$size" = "$s_size" ] && [ "$mtime" = "$s_mtime" ] || return 1
    [ "${M_EXACT[$i]}" = 0 ] || [ "$size" = "${M_SIZE[$i]}" ] || return 1
    [ "${M_SHA[$i]}" = - ] || [ "$s_sha" = "${M_SHA[$i]}" ] || return 1
    return 0
}

# --- download -----------------------------------------------------------------------------------
# fetch_once i part url -> runs one transfer attempt, emitting progress; sets HTTP_CODE, FETCH_RC.
fetch_once() {
    local i=$1 part=$2 url=$3 jn get_url auth=0 code errf="$WORK/err.$1" first
    jstr "${M_NAME[$i]}"; jn=$REPLY
    HTTP_CODE=000 FETCH_RC=0
    get_url=$url
    if [ "$TOOL" = curl ] && token_for "$url"; then
        # Walk the redirects by hand with HEAD: the token goes to token hosts only (the Hub may redirect
        # within itself first, e.g. a renamed repo), never to the CDN host that finally serves the bytes.
        local head hops=0
        while :; do
            head=$(curl_cfg 1 "$i" "$((hops == 0))" | curl -sS -I -K - -o /dev/null -w '%{http_code} %{redirect_url}' \
                --connect-timeout "$CONNECT_TIMEOUT" --max-time 60 -- "$get_url" 2>>"$errf")
            code=${head%% *}
            case "$code" in
                2??) auth=1; break ;;
                3??)
                    get_url=${head#* }
                    hops=$((hops + 1))
                    if [ -z "$get_url" ] || [ "$hops" -gt 8 ]; then HTTP_CODE=$code; FETCH_RC=99; return; fi
                    token_for "$get_url" || break ;;
                *) HTTP_CODE=$code; FETCH_RC=22; return ;;
            esac
        done
    elif [ "$TOOL" = wget ] && token_for "$url"; then
        HTTP_CODE=000 FETCH_RC=98; return
    fi
    : >"$errf"
    # A signed URL (an R2 presigned URL, a CDN's signed redirect) is a credential for as long as it lives:
    # it goes to the tool through the pipe too, never into argv.
    local hide=0
    case "$get_url" in *\?*) hide=1 ;; esac
    local -a target=(-- "$get_url")
    [ "$hide" = 1 ] && target=()
    if [ "$TOOL" = curl ]; then
        local -a opts=(-sS -f -C - -o "$part" -w '%{http_code}' --connect-timeout "$CONNECT_TIMEOUT"
            --speed-limit 1024 --speed-time "$STALL_TIMEOUT" -A comfyfleet-provision/1)
        if [ "$auth" = 1 ]; then
            first=0; [ "$get_url" = "$url" ] && first=1
            { curl_cfg 1 "$i" "$first"; [ "$hide" = 0 ] || url_cfg "$get_url"; } |
                curl "${opts[@]}" -K - ${target[@]+"${target[@]}"} >"$WORK/code.$i" 2>>"$errf" &
        elif [ "$get_url" = "$url" ] && [ -n "${M_CRED[$i]}" ]; then
            # curl sends these to the URL's host only, not to a host it is redirected to
            { curl_cfg 0 "$i" 1; [ "$hide" = 0 ] || url_cfg "$get_url"; } |
                curl "${opts[@]}" -K - -L --max-redirs 10 ${target[@]+"${target[@]}"} >"$WORK/code.$i" 2>>"$errf" &
        elif [ "$hide" = 1 ]; then
            url_cfg "$get_url" | curl "${opts[@]}" -K - -L --max-redirs 10 >"$WORK/code.$i" 2>>"$errf" &
        else
            curl "${opts[@]}" -L --max-redirs 10 -- "$get_url" >"$WORK/code.$i" 2>>"$errf" &
        fi
    else
        local -a wcfg=()
        if [ -n "${M_CRED[$i]}" ]; then  # a private config in our 0700 work dir (removed on exit)
            printf 'user = %s\npassword = %s\n' "${M_CRED[$i]%%:*}" "${M_CRED[$i]#*:}" >"$WORK/wgetrc.$i"
            wcfg=(--config="$WORK/wgetrc.$i")
        fi
        if [ "$hide" = 1 ]; then  # the URL on stdin (-i -), not in argv
            printf '%s\n' "$get_url" | wget ${wcfg[@]+"${wcfg[@]}"} -nv -c -O "$part" --tries=1 --timeout="$STALL_TIMEOUT" \
                -U comfyfleet-provision/1 -i - 2>>"$errf" &
        else
            wget ${wcfg[@]+"${wcfg[@]}"} -nv -c -O "$part" --tries=1 --timeout="$STALL_TIMEOUT" -U comfyfleet-provision/1 -- "$get_url" 2>>"$errf" &
        fi
    fi
    local pid=$! t0 t1 b0 b1 rate every=$PROGRESS_US
    now_us; t0=$REPLY
    fsize "$part"; b0=$REPLY
    while kill -0 "$pid" 2>/dev/null; do
        nap 0.1
        now_us; t1=$REPLY
        [ $((t1 - t0)) -ge "$every" ] || continue
        kill -0 "$pid" 2>/dev/null || break
        fsize "$part"; b1=$REPLY
        rate=0
        [ "$t1" -gt "$t0" ] && rate=$(( (b1 - b0) * 1000000 / (t1 - t0) ))
        emit "{\"event\":\"progress\",\"file\":$jn,\"bytes\":$b1,\"total\":${M_SIZE[$i]},\"rate\":$rate}"
        t0=$t1 b0=$b1
    done
    wait "$pid"
    FETCH_RC=$?
    if [ "$TOOL" = curl ]; then
        HTTP_CODE=$(cat "$WORK/code.$i" 2>/dev/null)
        HTTP_CODE=${HTTP_CODE:-000}
    elif [ "$FETCH_RC" = 8 ]; then  # an HTTP error: -nv logs "... ERROR 404: Not Found."
        HTTP_CODE=$(grep -o 'ERROR [0-9][0-9][0-9]' "$errf" 2>/dev/null | tail -n 1)
        HTTP_CODE=${HTTP_CODE#ERROR }
        is_uint "$HTTP_CODE" || HTTP_CODE=500
    elif [ "$FETCH_RC" = 6 ]; then  # wget's "Username/Password Authentication Failed": a 401
        HTTP_CODE=401
    elif [ "$FETCH_RC" = 0 ]; then
        HTTP_CODE=200
    fi
}

refused_msg() { # i url code -> REPLY: what a 401/403 means for this URL
    local host h
    host_of "$2"; host=$REPLY
    local IFS=,
    for h in $TOKEN_HOSTS; do
        [ "$host" = "${h,,}" ] || continue
        if [ -n "$HF_TOKEN_VAL" ]; then
            REPLY="${M_NAME[$1]}: the HF token was refused (HTTP $3); it needs access to this model"
        else
            REPLY="${M_NAME[$1]}: this model needs an HF token (HTTP $3); set HF_TOKEN"
        fi
        return 0
    done
    REPLY="${M_NAME[$1]}: access refused at its URL (HTTP $3): wrong mirror credentials, or an expired presigned URL"
}

# download i part -> 0 when the part file is complete; else returns an exit code (error emitted).
download() {
    local i=$1 part=$2 url=${M_URL[$1]} have after fails=0 delay=$BACKOFF reason msg jn
    jstr "${M_NAME[$i]}"; jn=$REPLY
    while :; do
        fsize "$part"; have=$REPLY
        if [ "${M_EXACT[$i]}" = 1 ]; then
            [ "$have" = "${M_SIZE[$i]}" ] && return 0
            [ "$have" -gt "${M_SIZE[$i]}" ] && { rm -f -- "$part"; have=0; PART_RESET=1; }
        fi
        fetch_once "$i" "$part" "$url"
        fsize "$part"; after=$REPLY
        # More bytes than the plan's exact size: the source is not the planned file. Re-downloading would
        # overshoot again (and count as progress, forever); let verify reject it (refetched once, then an error).
        [ "${M_EXACT[$i]}" = 1 ] && [ "$after" -gt "${M_SIZE[$i]}" ] && return 0
        if [ "$FETCH_RC" = 0 ]; then
            [ "${M_EXACT[$i]}" = 0 ] || [ "$after" = "${M_SIZE[$i]}" ] && return 0
            reason="transfer ended at byte $after of ${M_SIZE[$i]}"
        else
            case "$HTTP_CODE" in
                401|403)
                    refused_msg "$i" "$url" "$HTTP_CODE"
                    model_error "$i" $E_TOKEN needs_hf_token false "$REPLY"; return $E_TOKEN ;;
                404|410)
                    model_error "$i" $E_DOWNLOAD not_found false "${M_NAME[$i]}: not found at its URL (HTTP $HTTP_CODE)"
                    return $E_DOWNLOAD ;;
                416)
                    # Our partial file is not a prefix of what the server has: start over.
                    rm -f -- "$part"; after=0; PART_RESET=1; reason="HTTP 416 on resume" ;;
                *)
                    if { [ "$TOOL" = curl ] && [ "$FETCH_RC" = 23 ]; } || { [ "$TOOL" = wget ] && [ "$FETCH_RC" = 3 ]; }; then
                        local free_kb
                        free_kb=$(df -Pk -- "$(dirname -- "$part")" 2>/dev/null | awk 'NR==2 {print $4}')
                        local need_kb=1024  # approximate size: "full" = under 1 MiB left
                        [ "${M_EXACT[$i]}" = 1 ] && need_kb=$(( (M_SIZE[i] - after) / 1024 + 1 ))
                        if is_uint "${free_kb:-}" && [ "$free_kb" -lt "$need_kb" ]; then
                            model_error "$i" $E_DISK disk_full false \
                                "${M_NAME[$i]}: disk full while downloading ($((free_kb * 1024)) bytes free at byte $after); the partial file is kept for resuming"
                            return $E_DISK
                        fi
                        reason="write error (exit $FETCH_RC)"
                    elif [ "$FETCH_RC" = 33 ]; then
                        rm -f -- "$part"; after=0; PART_RESET=1; reason="server does not support resume"
                    elif [ "$FETCH_RC" = 98 ]; then
                        model_error "$i" $E_TOOL missing_tool false "${M_NAME[$i]}: curl is needed for downloads that use an HF token"
                        return $E_TOOL
                    else
                        reason="$(tail -n 1 "$WORK/err.$1" 2>/dev/null) (exit $FETCH_RC, HTTP $HTTP_CODE)"
                    fi ;;
            esac
        fi
        if [ "$after" -gt "$have" ]; then
            fails=0 delay=$BACKOFF
        else
            fails=$((fails + 1))
        fi
        if [ "$fails" -ge "$RETRIES" ]; then
            model_error "$i" $E_DOWNLOAD download_failed true \
                "${M_NAME[$i]}: download failed after $fails attempts without progress: $reason"
            return $E_DOWNLOAD
        fi
        jstr "$reason"
        emit "{\"event\":\"retry\",\"file\":$jn,\"offset\":$after,\"attempt\":$fails,\"reason\":$REPLY}"
        if [ "$fails" -gt 0 ]; then
            sleep "$delay" 2>/dev/null || sleep 1
            delay=$(awk -v d="$delay" 'BEGIN{d=d*2; if (d>30) d=30; print d}')
        fi
    done
}

# --- connections and segmented downloads ---------------------------------------------------------
# One budget of connections for the whole run (max_connections): a FIFO holding one byte per free
# connection. Taking = reading bytes, giving back = writing them. A download waits until it has all the
# connections it wants (a file that started with whatever was left would keep that few to its end, and
# the last files would crawl); one taker at a time (a second FIFO holding one byte is the mutex), so two
# downloads never each hold part of what the other waits for.
CONNFD="" TAKEFD=""
conn_init() {
    local n
    mkfifo "$WORK/conns" "$WORK/conns.take" 2>/dev/null && exec {CONNFD}<>"$WORK/conns" {TAKEFD}<>"$WORK/conns.take" ||
        { CONNFD=""; return 0; }
    for ((n = 0; n < MAX_CONNECTIONS; n++)); do printf x >&"$CONNFD"; done
    printf x >&"$TAKEFD"
}
conn_take() { # want -> REPLY = connections taken (want, at most max_connections), once they are free
    local got=0 want=$1 c
    [ "$want" -le "$MAX_CONNECTIONS" ] || want=$MAX_CONNECTIONS
    [ -n "$CONNFD" ] || { REPLY=$want; return 0; }
    read -r -n 1 -u "$TAKEFD" c
    while [ "$got" -lt "$want" ]; do read -r -n 1 -u "$CONNFD" c && got=$((got + 1)); done
    printf x >&"$TAKEFD"
    REPLY=$got
}
conn_give() { # n
    local n
    [ -n "$CONNFD" ] || return 0
    for ((n = 0; n < $1; n++)); do printf x >&"$CONNFD"; done
}

# A file of exact size larger than one segment is fetched over several connections (curl only).
# Segments of segment_size bytes are dealt round-robin to W workers; each worker fetches its segments in
# file order with ONE curl (one kept-alive connection, a `next` block per segment) into
# `<name>.part.<start>-<end>`. The parent appends every complete segment that starts where `.part` ends,
# so `.part` grows in order: the streaming sha256 follower keeps working, the hash trails the download
# by about one round of segments, and each byte sits on disk once (twice only for the segment being
# appended). Resume per segment: the bytes of a dropped segment become a complete smaller piece (renamed)
# and only the rest is fetched again. A server that ignores Range answers 200, which curl refuses before
# writing (max-filesize = the segment's length): the file then falls back to one connection.
SEG_SIZE=0 SEG_N=0
segmentable() { # i -> 0 when the file is fetched in segments
    [ "$TOOL" = curl ] && [ "$CONNECTIONS" -ge 2 ] && [ "${M_EXACT[$1]}" = 1 ] && [ "${M_SIZE[$1]}" -gt "$SEGMENT_SIZE" ]
}
seg_layout() { SEG_SIZE=$SEGMENT_SIZE; SEG_N=$(( (M_SIZE[$1] + SEGMENT_SIZE - 1) / SEGMENT_SIZE )); }
piece_at() { # part start -> REPLY = the piece file starting at that byte, or ""
    local m=("$1.$2"-*)
    REPLY=""
    [ -e "${m[0]}" ] && REPLY=${m[0]}
    return 0
}
part_bytes() { # part -> REPLY = bytes on disk for this download (.part plus its pieces)
    local n total=0
    while read -r n; do total=$((total + n)); done < <(stat -c %s -- "$1" "$1".*-* 2>/dev/null)
    REPLY=$total
}

# seg_prepare i part: before a run, drop pieces that cannot be used: names that are not ranges, ranges
# past the file's end or across a segment boundary, and pieces that start before the end of `.part`
# (already appended, or an append cut short: `.part` still holds a correct prefix).
seg_prepare() {
    local i=$1 part=$2 have f r s e
    local -a files=("$part".*-*)
    [ -e "${files[0]}" ] || return 0
    if ! segmentable "$i"; then rm -f -- "${files[@]}"; return 0; fi
    seg_layout "$i"
    fsize "$part"; have=$REPLY
    for f in "${files[@]}"; do
        r=${f##*.}; s=${r%%-*}; e=${r#*-}
        if ! is_uint "$s" || ! is_uint "$e" || [ "$s" -lt "$have" ] || [ "$e" -lt "$s" ] ||
            [ "$e" -ge "${M_SIZE[$i]}" ] || [ $((s / SEG_SIZE)) != $((e / SEG_SIZE)) ]; then
            rm -f -- "$f"
        fi
    done
}

# seg_resolve i url: where the segments are fetched. Redirects are walked once with HEAD (with the token
# on token hosts only), so the segments go straight to the CDN instead of through the Hub each time.
# Sets GET_URL, SEG_AUTH (send the token), SEG_CRED (send the URL's user:password), SEG_LOC (follow
# redirects), FETCH_RC=0; or an error in HTTP_CODE / FETCH_RC (token hosts only: elsewhere a HEAD that
# fails, e.g. on a URL presigned for GET, just leaves the GETs to tell).
seg_resolve() {
    local i=$1 url=$2 head code hops=0 tok=0 nxt
    GET_URL=$url SEG_AUTH=0 SEG_CRED=1 SEG_LOC=1 HTTP_CODE=000 FETCH_RC=0
    token_for "$url" && tok=1
    while :; do
        head=$( { curl_cfg "$tok" "$i" "$SEG_CRED"; url_cfg "$GET_URL"; } |
            curl -sS -I -K - -o /dev/null -w '%{http_code} %{redirect_url}' --connect-timeout "$CONNECT_TIMEOUT" \
                --max-time 60 -A comfyfleet-provision/1 2>>"$WORK/err.$i")
        code=${head%% *}
        case "$code" in
            2??) [ "$tok" = 1 ] && { SEG_AUTH=1; SEG_LOC=0; }; return 0 ;;
            3??)
                nxt=${head#* }
                hops=$((hops + 1))
                if [ -z "$nxt" ] || [ "$hops" -gt 8 ]; then
                    [ "$tok" = 1 ] && { HTTP_CODE=$code; FETCH_RC=99; }
                    return 0
                fi
                GET_URL=$nxt SEG_CRED=0
                token_for "$GET_URL" || tok=0 ;;
            000|"") HTTP_CODE=000; FETCH_RC=7; return 0 ;;
            *) [ "$tok" = 1 ] && { HTTP_CODE=$code; FETCH_RC=22; }; return 0 ;;
        esac
    done
}

seg_cfg() { # i part range...: the worker's curl config on stdout (a pipe: nothing in argv or on disk)
    local i=$1 part=$2 r s e n=0
    shift 2
    for r; do
        s=${r%%-*}; e=${r#*-}
        [ "$n" = 0 ] || printf 'next\n'
        n=1
        printf 'fail\ngloboff\nconnect-timeout = %s\nspeed-limit = 1024\nspeed-time = %s\nuser-agent = "comfyfleet-provision/1"\n' \
            "$CONNECT_TIMEOUT" "$STALL_TIMEOUT"
        [ "$SEG_LOC" = 1 ] && printf 'location\nmax-redirs = 10\n'
        curl_cfg "$SEG_AUTH" "$i" "$SEG_CRED"
        url_cfg "$GET_URL"
        cfg_str "$part.$r"
        printf 'output = %s\nrange = "%s"\nmax-filesize = %s\nwrite-out = "%s %%{http_code} %%{size_download}\\n"\n' \
            "$REPLY" "$r" $((e - s + 1)) "$r"
    done
}

# seg_worker i w part url: fetch the ranges in $WORK/todo.$i.$w in order, one curl per attempt, retrying
# with backoff. Exit 0 when all are on disk; else "code<TAB>kind<TAB>retryable<TAB>message" goes to
# $WORK/segerr.$i.$w (kind "norange": the server ignores Range) and the exit status is 1.
seg_worker() {
    local i=$1 w=$2 part=$3 url=$4 jn fails=0 delay=$BACKOFF r s e len f st sz rc failed gained need reason
    local errf="$WORK/segerr.$i.$w" wo="$WORK/wo.$i.$w" resolved=$SEG_RESOLVED
    local -a todo=() left=()
    local -A status=()
    mapfile -t todo <"$WORK/todo.$i.$w"
    jstr "${M_NAME[$i]}"; jn=$REPLY
    while [ ${#todo[@]} -gt 0 ]; do
        : >"$wo"
        # The parent resolved the redirects once for all connections; a retry resolves them again (a
        # signed CDN URL may have expired).
        if [ "$resolved" = 1 ]; then FETCH_RC=0 HTTP_CODE=000; else seg_resolve "$i" "$url"; fi
        resolved=0
        rc=$FETCH_RC failed=$HTTP_CODE
        if [ "$rc" = 0 ]; then
            seg_cfg "$i" "$part" "${todo[@]}" | curl -sS --fail-early -K - -A comfyfleet-provision/1 >"$wo" 2>>"$WORK/err.$i.$w"
            rc=$? failed=""
        fi
        # What arrived: the write-out line of each finished transfer says its status and byte count.
        status=()
        while read -r r st sz; do status[$r]="$st $sz"; done <"$wo"
        left=() gained=0 need=0
        for r in "${todo[@]}"; do
            s=${r%%-*}; e=${r#*-}; len=$((e - s + 1)); f="$part.$r"; st=${status[$r]:-}
            if [ "$st" = "206 $len" ]; then gained=$((gained + len)); continue; fi  # (maybe appended already)
            [ -n "$st" ] && [ -z "$failed" ] && failed=${st%% *}
            if [ -f "$f" ]; then
                fsize "$f"; sz=$REPLY
                if [ "$sz" = "$len" ]; then gained=$((gained + len)); continue; fi
                if [ "${st%% *}" = 206 ] && [ "$sz" -gt 0 ] && [ "$sz" -lt "$len" ]; then
                    # keep what arrived as a complete piece; fetch only the rest
                    mv -f -- "$f" "$part.$s-$((s + sz - 1))"
                    gained=$((gained + sz)) s=$((s + sz))
                else
                    rm -f -- "$f"
                fi
            fi
            left+=("$s-$e")
            need=$((need + e - s + 1))
        done
        todo=(${left[@]+"${left[@]}"})
        [ ${#todo[@]} -gt 0 ] || return 0
        case "${failed:-000}" in
            200) printf '0\tnorange\tfalse\tthe server ignores Range\n' >"$errf"; return 1 ;;
            416) printf '0\tnorange\tfalse\tthe server refused a range (HTTP 416)\n' >"$errf"; return 1 ;;
            401|403)
                if [ "$GET_URL" = "$url" ]; then
                    refused_msg "$i" "$url" "$failed"
                    printf '%s\tneeds_hf_token\tfalse\t%s\n' "$E_TOKEN" "$REPLY" >"$errf"; return 1
                fi
                reason="HTTP $failed from the redirect target (its signed URL may have expired)" ;;
            404|410)
                printf '%s\tnot_found\tfalse\t%s\n' "$E_DOWNLOAD" "${M_NAME[$i]}: not found at its URL (HTTP $failed)" >"$errf"
                return 1 ;;
            *)
                if [ "$rc" = 63 ]; then
                    printf '0\tnorange\tfalse\tthe server ignores Range\n' >"$errf"; return 1
                fi
                if [ "$rc" = 23 ]; then
                    local free_kb
                    free_kb=$(df -Pk -- "$(dirname -- "$part")" 2>/dev/null | awk 'NR==2 {print $4}')
                    if is_uint "${free_kb:-}" && [ "$free_kb" -lt $((need / 1024 + 1)) ]; then
                        printf '%s\tdisk_full\tfalse\t%s\n' "$E_DISK" \
                            "${M_NAME[$i]}: disk full while downloading ($((free_kb * 1024)) bytes free); the pieces are kept for resuming" >"$errf"
                        return 1
                    fi
                fi
                reason="$(tail -n 1 "$WORK/err.$i.$w" 2>/dev/null) (exit $rc, HTTP ${failed:-000})" ;;
        esac
        if [ "$gained" -gt 0 ]; then fails=0 delay=$BACKOFF; else fails=$((fails + 1)); fi
        if [ "$fails" -ge "$RETRIES" ]; then
            printf '%s\tdownload_failed\ttrue\t%s\n' "$E_DOWNLOAD" \
                "${M_NAME[$i]}: download failed after $fails attempts without progress: $reason" >"$errf"
            return 1
        fi
        jstr "$reason"
        emit "{\"event\":\"retry\",\"file\":$jn,\"offset\":${todo[0]%%-*},\"attempt\":$fails,\"connection\":$w,\"reason\":$REPLY}"
        if [ "$fails" -gt 0 ]; then
            sleep "$delay" 2>/dev/null || sleep 1
            delay=$(awk -v d="$delay" 'BEGIN{d=d*2; if (d>30) d=30; print d}')
        fi
    done
    return 0
}

seg_join() { # part: append every complete piece that starts at SEG_HAVE (.part's size); 1 on a write error
    local part=$1 f r e
    while piece_at "$part" "$SEG_HAVE"; [ -n "$REPLY" ]; do
        f=$REPLY; r=${f##*.}; e=${r#*-}
        fsize "$f"
        [ "$REPLY" = $((e - SEG_HAVE + 1)) ] || return 0
        cat -- "$f" >>"$part" 2>>"$WORK/err.join.$BASHPID" || return 1
        rm -f -- "$f"
        SEG_HAVE=$((e + 1))
    done
    return 0
}

# seg_fetch i part W -> 0 when .part holds the whole file; 3 when the server ignores Range (pieces
# removed: fetch with one connection); else an exit code (error reported).
seg_fetch() {
    local i=$1 part=$2 W=$3 w k s e f r sz have n=0 jn alive pid t0 t1 b0 b1 rate bad="" line
    local -a pids=()
    jstr "${M_NAME[$i]}"; jn=$REPLY
    seg_layout "$i"
    fsize "$part"; have=$REPLY
    for ((w = 0; w < W; w++)); do : >"$WORK/todo.$i.$w"; rm -f -- "$WORK/segerr.$i.$w"; done
    # What is missing, per segment: from its first byte not on disk (a piece left by a dropped run is
    # complete up to its size), dealt round-robin to the workers.
    for ((k = have / SEG_SIZE; k < SEG_N; k++)); do
        s=$((k * SEG_SIZE)); [ "$s" -ge "$have" ] || s=$have
        e=$(((k + 1) * SEG_SIZE - 1)); [ "$e" -lt "${M_SIZE[$i]}" ] || e=$((M_SIZE[i] - 1))
        while piece_at "$part" "$s"; [ -n "$REPLY" ]; do
            f=$REPLY; r=${f##*.}; r=${r#*-}
            fsize "$f"; sz=$REPLY
            if [ "$r" -le "$e" ] && [ "$sz" = $((r - s + 1)) ]; then s=$((r + 1)); continue; fi
            if [ "$r" -le "$e" ] && [ "$sz" -gt 0 ] && [ "$sz" -lt $((r - s + 1)) ]; then
                mv -f -- "$f" "$part.$s-$((s + sz - 1))"; s=$((s + sz))
            else
                rm -f -- "$f"
            fi
            break
        done
        [ "$s" -le "$e" ] || continue
        printf '%s-%s\n' "$s" "$e" >>"$WORK/todo.$i.$((n % W))"
        n=$((n + 1))
    done
    [ "$n" -lt "$W" ] && { conn_give $((W - n)); W=$n; }
    SEG_USED=$W SEG_HAVE=$have SEG_RESOLVED=0
    if [ "$W" -gt 0 ]; then seg_resolve "$i" "${M_URL[$i]}"; [ "$FETCH_RC" = 0 ] && SEG_RESOLVED=1; fi
    for ((w = 0; w < W; w++)); do
        seg_worker "$i" "$w" "$part" "${M_URL[$i]}" &
        pids+=($!)
    done
    now_us; t0=$REPLY
    part_bytes "$part"; b0=$REPLY
    while :; do
        if ! seg_join "$part"; then bad=join; break; fi
        alive=0
        for pid in ${pids[@]+"${pids[@]}"}; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
        for ((w = 0; w < W; w++)); do [ -s "$WORK/segerr.$i.$w" ] && { bad=$w; break; }; done
        [ -z "$bad" ] || break
        [ "$alive" -gt 0 ] || break
        now_us; t1=$REPLY
        if [ $((t1 - t0)) -ge "$PROGRESS_US" ]; then
            part_bytes "$part"; b1=$REPLY
            rate=$(( (b1 - b0) * 1000000 / (t1 - t0) ))
            emit "{\"event\":\"progress\",\"file\":$jn,\"bytes\":$b1,\"total\":${M_SIZE[$i]},\"rate\":$rate,\"connections\":$alive}"
            t0=$t1 b0=$b1
        fi
        nap 0.1
    done
    if [ -n "$bad" ]; then
        for pid in ${pids[@]+"${pids[@]}"}; do kill_tree "$pid"; kill -TERM "$pid" 2>/dev/null; done
    fi
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null; done
    conn_give "$W"
    if [ "$bad" = join ]; then
        model_error "$i" $E_DISK disk_full false \
            "${M_NAME[$i]}: cannot append a segment to the partial file (disk full?): $(tail -n 1 "$WORK"/err.join.* 2>/dev/null)"
        return $E_DISK
    fi
    if [ -n "$bad" ]; then
        IFS=$'\t' read -r k r s line <"$WORK/segerr.$i.$bad"
        if [ "$r" = norange ]; then
            rm -f -- "$part".*-*
            return 3
        fi
        model_error "$i" "$k" "$r" "$s" "$line"
        return "$k"
    fi
    seg_join "$part" || { model_error "$i" $E_DISK disk_full false "${M_NAME[$i]}: cannot append a segment to the partial file (disk full?)"; return $E_DISK; }
    rm -f -- "$part".*-*  # strays (a piece that overlaps one already appended)
    fsize "$part"
    [ "$REPLY" = "${M_SIZE[$i]}" ] && return 0
    model_error "$i" $E_DOWNLOAD download_failed true "${M_NAME[$i]}: segments missing after every connection finished ($REPLY of ${M_SIZE[$i]} bytes)"
    return $E_DOWNLOAD
}

# fetch_bytes i part -> 0 when .part holds the whole file; else an exit code (error reported). Takes its
# connections from the run's budget and gives them back; sets DL_CONNS (connections used).
fetch_bytes() {
    local i=$1 part=$2 want=1 jn rc
    if segmentable "$i" && [ "$SEG_NORANGE" = 0 ]; then
        seg_layout "$i"
        want=$CONNECTIONS
        [ "$SEG_N" -lt "$want" ] && want=$SEG_N
        conn_take "$want"
        SEG_USED=$REPLY
        seg_fetch "$i" "$part" "$REPLY"; rc=$?  # gives its connections back
        DL_CONNS=$SEG_USED
        [ "$rc" = 3 ] || return "$rc"
        SEG_NORANGE=1
        jstr "${M_NAME[$i]}"; jn=$REPLY
        fsize "$part"
        emit "{\"event\":\"retry\",\"file\":$jn,\"offset\":$REPLY,\"attempt\":0,\"reason\":\"the server ignores Range requests: one connection\"}"
    fi
    conn_take 1
    DL_CONNS=1
    download "$i" "$part"; rc=$?
    conn_give 1
    return "$rc"
}

# use_fallback i: after the file's source failed (FALLBACK_REASON), switch to its fallback source, if any.
use_fallback() {
    local i=$1 jn
    [ -n "${M_FB_URL[$i]}" ] && [ -n "${FALLBACK_REASON:-}" ] || return 1
    jstr "${M_NAME[$i]}"; jn=$REPLY
    jstr "${FALLBACK_REASON:-the first source failed}"
    emit "{\"event\":\"fallback\",\"file\":$jn,\"folder\":${M_JFOLDER[$i]},\"reason\":$REPLY}"
    M_URL[$i]=${M_FB_URL[$i]} M_CRED[$i]=${M_FB_CRED[$i]} M_FB_URL[$i]="" M_FB_CRED[$i]="" FALLBACK_REASON=""
    SEG_NORANGE=0
    return 0
}

# Streaming hash: a follower reads the .part as curl appends to it (resume appends to the same inode),
# so the sha256 is ready when the last byte lands instead of costing a second pass over a 10 GB file.
STREAM_HASH=0
if tail --version 2>/dev/null | grep -q GNU && command -v sha256sum >/dev/null 2>&1; then STREAM_HASH=1; fi
hash_start() { # i part owner_pid
    HASH_PID="" HASH_OUT="$WORK/hash.$1"
    [ "$STREAM_HASH" = 1 ] && [ "${M_EXACT[$1]}" = 1 ] || return 0
    rm -f -- "$HASH_OUT"
    : >>"$2" || return 0
    tail -c +1 --pid="$3" -f -- "$2" 2>/dev/null | head -c "${M_SIZE[$1]}" | sha256sum >"$HASH_OUT" &
    HASH_PID=$!
}
hash_collect() { # i -> REPLY = sha256 from the follower, or "" (then verify hashes the file itself)
    local h="" deadline
    REPLY=""
    [ -n "$HASH_PID" ] || return 0
    now_us; deadline=$(( REPLY + 30000000 + M_SIZE[$1] / 20 ))
    REPLY=""
    while :; do
        h=""
        [ -s "$HASH_OUT" ] && read -r h _ <"$HASH_OUT"
        [ ${#h} = 64 ] && { REPLY=$h; return 0; }
        now_us; [ "$REPLY" -lt "$deadline" ] || { REPLY=""; return 0; }
        REPLY=""
        nap 0.02
    done
}
hash_stop() {
    [ -n "${HASH_PID:-}" ] || return 0
    kill_tree "$HASH_PID"
    kill -TERM "$HASH_PID" 2>/dev/null
    HASH_PID=""
}

fetch_model() {
    local i=$1 folder=${M_FOLDER[$1]} name=${M_NAME[$1]} dir dest part jn rc tries=0 t0 t1 bytes secs
    dir="$MODELS/$folder" dest="$MODELS/$folder/$name" part="$MODELS/$folder/$name.part"
    jstr "$name"; jn=$REPLY
    mkdir -p -- "$dir" || { model_error "$i" $E_DOWNLOAD io false "$name: cannot create $dir"; return; }
    if [ -f "$dest" ]; then
        # Present but not (or no longer) verified for this plan: verify the file we have first.
        if verify "$dest" "$i"; then
            write_sidecar "$i" "$dest"
            emit "{\"event\":\"skipped\",\"file\":$jn,\"folder\":${M_JFOLDER[$i]},\"reason\":\"verified\"}"
            record model skipped "$name" 0 0 ""
            return
        fi
        jstr "$VERIFY_ERR"
        emit "{\"event\":\"invalid\",\"file\":$jn,\"reason\":$REPLY}"
        rm -f -- "$dest" "$dir/.$name.verified"
    fi
    seg_prepare "$i" "$part"
    part_bytes "$part"
    emit "{\"event\":\"start\",\"file\":$jn,\"folder\":${M_JFOLDER[$i]},\"offset\":$REPLY,\"total\":${M_SIZE[$i]}}"
    now_us; t0=$REPLY
    local owner=$BASHPID pre tb
    SEG_NORANGE=0 DL_CONNS=1 FALLBACK_REASON=""
    while :; do
        PART_RESET=0
        seg_prepare "$i" "$part"
        hash_start "$i" "$part" "$owner"
        FB_ARMED=1
        fetch_bytes "$i" "$part"; rc=$?
        FB_ARMED=0
        now_us; tb=$REPLY  # the last byte is on disk: what follows is the hash catching up + verification
        pre=""
        if [ "$rc" = 0 ] && [ "$PART_RESET" = 0 ]; then hash_collect "$i"; pre=$REPLY; fi
        hash_stop
        if [ "$rc" != 0 ]; then
            use_fallback "$i" && { tries=0; continue; }
            return
        fi
        if verify "$part" "$i" "$pre"; then
            mv -f -- "$part" "$dest" || { model_error "$i" $E_DOWNLOAD io false "$name: rename failed"; return; }
            write_sidecar "$i" "$dest"
            fsize "$dest"; bytes=$REPLY
            now_us; t1=$REPLY
            secs=$(( (t1 - t0) / 1000 ))
            emit "{\"event\":\"done\",\"file\":$jn,\"folder\":${M_JFOLDER[$i]},\"bytes\":$bytes,\"sha256\":\"$VERIFIED_SHA\",\"ms\":$secs,\"rate\":$(( bytes * 1000 / (secs > 0 ? secs : 1) )),\"connections\":$DL_CONNS,\"verify_ms\":$(( (t1 - tb) / 1000 ))}"
            record model done "$name" "$bytes" 0 "$VERIFIED_SHA"
            return
        fi
        rm -f -- "$part"
        if [ "$tries" -ge 1 ]; then
            FB_ARMED=1
            model_error "$i" $E_VERIFY verification_failed false "$name: verification failed twice: $VERIFY_ERR"
            FB_ARMED=0
            use_fallback "$i" && { tries=0; continue; }
            return
        fi
        tries=1
        jstr "verification failed: $VERIFY_ERR"
        emit "{\"event\":\"retry\",\"file\":$jn,\"offset\":0,\"attempt\":1,\"reason\":$REPLY}"
    done
}

# --- custom nodes -------------------------------------------------------------------------------
pick_python() {
    [ "$PY" != auto ] && return 0
    local c
    for c in /venv/main/bin/python "$COMFY_DIR/venv/bin/python" "$COMFY_DIR/.venv/bin/python" python3 python; do
        if command -v "$c" >/dev/null 2>&1; then PY=$c; return 0; fi
    done
    PY=python3
}

node_error() { # j message [code: E_NODE, or E_TOOL when git is missing]
    local jn jm code=${3:-$E_NODE}
    jstr "${N_NAME[$1]}"; jn=$REPLY
    jstr "$2"; jm=$REPLY
    emit "{\"event\":\"node_error\",\"node\":$jn,\"code\":$code,\"message\":$jm}"
    record node error "${N_NAME[$1]}" 0 "$code" "$2"
}

install_node() {
    local j=$1 name=${N_NAME[$1]} url=${N_URL[$1]} commit=${N_COMMIT[$1]}
    local dir="$COMFY_DIR/custom_nodes/${N_NAME[$1]}" marker="$STATE_DIR/nodes/${N_NAME[$1]}" head="" jn
    local -a git=(git -c safe.directory='*' -c advice.detachedHead=false)
    export GIT_TERMINAL_PROMPT=0
    jstr "$name"; jn=$REPLY
    command -v git >/dev/null 2>&1 || { node_error "$j" "$name: git is not installed" $E_TOOL; return; }
    if [ -d "$dir/.git" ]; then
        head=$("${git[@]}" -C "$dir" rev-parse HEAD 2>/dev/null)
        if [ -n "$head" ] && [ "${head#"$commit"}" != "$head" ] && [ "$(cat "$marker" 2>/dev/null)" = "$head" ]; then
            emit "{\"event\":\"node_skipped\",\"node\":$jn,\"commit\":\"$head\"}"
            record node skipped "$name" 0 0 ""
            return
        fi
    fi
    emit "{\"event\":\"node_start\",\"node\":$jn,\"commit\":\"$commit\"}"
    local out="$WORK/node.$j"
    if [ -d "$dir/.git" ] && [ "${head#"$commit"}" != "$head" ]; then
        :  # right commit, requirements not recorded as installed yet
    elif [ -d "$dir/.git" ]; then
        { "${git[@]}" -C "$dir" fetch --quiet "$url" || "${git[@]}" -C "$dir" fetch --quiet origin; } >>"$out" 2>&1
        "${git[@]}" -C "$dir" checkout --quiet --force --detach "$commit" >>"$out" 2>&1 ||
            { node_error "$j" "$name: cannot check out commit $commit: $(tail -n 1 "$out")"; return; }
    else
        # ComfyUI skips directories ending in .disabled, so neither the old copy nor a clone in progress loads.
        [ -e "$dir" ] && mv -- "$dir" "$dir.replaced-$(date +%s).disabled"
        local tmp="$COMFY_DIR/custom_nodes/.$name.clone.$BASHPID.disabled"
        rm -rf -- "$tmp"
        if ! "${git[@]}" clone --quiet -- "$url" "$tmp" >>"$out" 2>&1; then
            rm -rf -- "$tmp"; node_error "$j" "$name: git clone failed: $(tail -n 1 "$out")"; return
        fi
        if ! "${git[@]}" -C "$tmp" checkout --quiet --detach "$commit" >>"$out" 2>&1; then
            rm -rf -- "$tmp"; node_error "$j" "$name: commit $commit not found in $url"; return
        fi
        mv -- "$tmp" "$dir" || { node_error "$j" "$name: cannot move clone into place"; return; }
    fi
    head=$("${git[@]}" -C "$dir" rev-parse HEAD 2>/dev/null)
    local req="$dir/requirements.txt" pip_ran=false
    if [ "$PIP" = 1 ] && [ -f "$req" ] && grep -qvE '^[[:space:]]*(#|$)' "$req"; then
        # As the image's own build does: the torch family is the image's CUDA build; a node's requirements
        # must neither name it (lines stripped) nor pull another one in (constraint on the installed ones).
        local torch_re='^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;[@]|$)' use=$req filtered=""
        if grep -qiE "$torch_re" "$req"; then  # beside the original: nested -r/-c paths stay relative to it
            filtered="$dir/.comfyfleet-requirements.txt"
            grep -viE "$torch_re" "$req" >"$filtered"; use=$filtered
        fi
        local -a cons=()
        [ -s "$WORK/torch-constraints.txt" ] && cons=(-c "$WORK/torch-constraints.txt")
        if ! "$PY" -m pip install --disable-pip-version-check --no-input -q -r "$use" "${cons[@]}" >>"$out" 2>&1; then
            [ -n "$filtered" ] && rm -f -- "$filtered"
            node_error "$j" "$name: pip install -r requirements.txt failed: $(tail -n 1 "$out")"; return
        fi
        [ -n "$filtered" ] && rm -f -- "$filtered"
        pip_ran=true
    fi
    printf '%s\n' "$head" >"$marker"
    emit "{\"event\":\"node_done\",\"node\":$jn,\"commit\":\"$head\",\"pip\":$pip_ran}"
    record node done "$name" 0 0 ""
}

torch_constraints() { # the installed torch family, pinned (pip -c): a node must not replace it
    "$PY" - >"$WORK/torch-constraints.txt" 2>/dev/null <<'PYEOF' || : >"$WORK/torch-constraints.txt"
import importlib.metadata as md
for name in ("torch", "torchvision", "torchaudio"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
PYEOF
}

install_nodes() {
    local j
    [ "$PIP" = 1 ] && torch_constraints
    for j in "${!N_NAME[@]}"; do install_node "$j"; done
}

# --- main ---------------------------------------------------------------------------------------
now_us; T_START=$REPLY
# Our process group (0 if unknown): the control plane stops the whole group on cancel, so it needs it
# even after we are gone (a closed channel kills this shell by SIGPIPE, but not the curl it started).
PGID=0
if read -r _stat </proc/$$/stat 2>/dev/null; then set -- ${_stat##*) }; PGID=${3:-0}; set --; fi
jstr "$COMFY_DIR"
emit "{\"event\":\"begin\",\"pid\":$$,\"pgid\":$PGID,\"version\":1,\"comfy_dir\":$REPLY,\"tool\":\"$TOOL\",\"parallel\":$PARALLEL,\"connections\":$CONNECTIONS,\"max_connections\":$MAX_CONNECTIONS,\"models\":${#M_NAME[@]},\"nodes\":${#N_NAME[@]}}"

TODO=()
NEED=0
declare -A FS_NEED=() FS_DIR=()
for i in "${!M_NAME[@]}"; do
    if sidecar_ok "$i"; then
        jstr "${M_NAME[$i]}"
        emit "{\"event\":\"skipped\",\"file\":$REPLY,\"folder\":${M_JFOLDER[$i]},\"reason\":\"verified\"}"
        record model skipped "${M_NAME[$i]}" 0 0 ""
        continue
    fi
    TODO+=("$i")
    if [ ! -f "$MODELS/${M_FOLDER[$i]}/${M_NAME[$i]}" ]; then
        part_bytes "$MODELS/${M_FOLDER[$i]}/${M_NAME[$i]}.part"  # with the pieces of a segmented download
        if [ "$REPLY" -lt "${M_SIZE[$i]}" ]; then
            NEED=$((NEED + M_SIZE[i] - REPLY))
            # Per filesystem: a model folder may be a symlink to another disk (a volume, a bigger mount).
            d="$MODELS/${M_FOLDER[$i]}"
            [ -d "$d" ] || d=$MODELS
            dev=$(stat -L -c %d -- "$d" 2>/dev/null) || dev=models
            FS_NEED[$dev]=$(( ${FS_NEED[$dev]:-0} + M_SIZE[i] - REPLY ))
            FS_DIR[$dev]=$d
        fi
    fi
done
emit "{\"event\":\"plan\",\"to_fetch\":${#TODO[@]},\"bytes_needed\":$NEED}"

if [ "${#TODO[@]}" -gt 0 ]; then
    [ "$TOOL" != none ] || fatal $E_TOOL "neither curl nor wget is installed on the instance"
    [ "${#FS_NEED[@]}" -gt 0 ] || { FS_NEED[models]=0; FS_DIR[models]=$MODELS; }  # the headroom still counts
    for dev in "${!FS_NEED[@]}"; do
        d=${FS_DIR[$dev]} need=${FS_NEED[$dev]}
        avail_kb=$(df -Pk -- "$d/" 2>/dev/null | awk 'NR==2 {print $4}')
        if is_uint "${avail_kb:-}"; then
            avail=$((avail_kb * 1024))
            if [ $((need + MIN_FREE)) -gt "$avail" ]; then
                fatal $E_DISK "not enough disk under $d: need $need bytes for models + $MIN_FREE bytes headroom, $avail bytes free"
            fi
        fi
    done
fi

NODES_PID=""
if [ "${#N_NAME[@]}" -gt 0 ]; then
    pick_python
    install_nodes &
    NODES_PID=$!
fi

conn_init
running_downloads() {
    REPLY=$(jobs -rp | wc -l)
    if [ -n "$NODES_PID" ] && kill -0 "$NODES_PID" 2>/dev/null; then REPLY=$((REPLY - 1)); fi
}
for i in "${TODO[@]}"; do
    while running_downloads; [ "$REPLY" -ge "$PARALLEL" ]; do
        wait -n
    done
    fetch_model "$i" &
done
wait
[ -n "$CONNFD" ] && exec {CONNFD}>&- {TAKEFD}>&-  # a ComfyUI started by the restart below must not inherit them

# --- restart ComfyUI when custom nodes changed --------------------------------------------------
RESTARTED=false
WAIT_URL=$COMFY_URL
if [ "$RESTART" = auto ]; then
    # A machine-provided hook wins (it restarts ComfyUI and returns once it answers; the simulated world
    # installs one); else supervisor as on Vast's ComfyUI image; else report that a restart is needed.
    if [ -x "$STATE_DIR/restart" ]; then
        printf -v RESTART '%q' "$STATE_DIR/restart"  # quoted: the dir may hold spaces, quotes or $(...)
        WAIT_URL=-
    elif command -v supervisorctl >/dev/null 2>&1; then
        RESTART="supervisorctl restart comfyui"
    else
        RESTART=-
    fi
fi
if grep -q $'^node\tdone\t' "$RESULTS"; then
    if [ "$RESTART" != - ]; then
        emit '{"event":"restart","reason":"custom nodes changed"}'
        # Close the lock and nap fds: a ComfyUI started by the command must not hold our lock forever.
        if (
            exec 9>&-
            [ -n "${NAPFD:-}" ] && exec {NAPFD}>&-
            exec bash -c "$RESTART"
        ) >"$WORK/restart.log" 2>&1 </dev/null; then
            RESTARTED=true
            if [ "$WAIT_URL" != - ]; then
                now_us; deadline=$(( REPLY + RESTART_TIMEOUT * 1000000 ))
                up=0
                while :; do
                    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -- "$WAIT_URL" 2>/dev/null)
                    case "$code" in 000|"") ;; 5??) ;; *) up=1; break ;; esac
                    now_us; [ "$REPLY" -lt "$deadline" ] || break
                    sleep 1
                done
                if [ "$up" = 1 ]; then
                    emit '{"event":"comfy_ready"}'
                else
                    record comfy error ComfyUI 0 $E_RESTART "ComfyUI did not answer at $COMFY_URL within ${RESTART_TIMEOUT}s after restart"
                fi
            fi
        else
            record comfy error ComfyUI 0 $E_RESTART "restart command failed: $(tail -n 1 "$WORK/restart.log")"
        fi
    else
        emit '{"event":"restart_needed","reason":"custom nodes changed and the plan has no restart command"}'
    fi
fi

# --- summary ------------------------------------------------------------------------------------
downloaded=0 skipped=0 failed=0 bytes=0 n_done=0 n_skip=0 n_fail=0 code=0 errors=""
while IFS=$'\t' read -r kind status name nbytes ecode msg; do
    case "$kind/$status" in
        model/done) downloaded=$((downloaded + 1)); bytes=$((bytes + nbytes)) ;;
        model/skipped) skipped=$((skipped + 1)) ;;
        node/done) n_done=$((n_done + 1)) ;;
        node/skipped) n_skip=$((n_skip + 1)) ;;
    esac
    if [ "$status" = error ]; then
        case "$kind" in model) failed=$((failed + 1)) ;; node) n_fail=$((n_fail + 1)) ;; esac
        [ "$code" = 0 ] && code=$ecode
        jstr "$name"; jn=$REPLY
        jstr "$msg"
        key=file; [ "$kind" = node ] && key=node; [ "$kind" = comfy ] && key=component
        errors="$errors${errors:+,}{\"$key\":$jn,\"code\":$ecode,\"message\":$REPLY}"
    fi
done <"$RESULTS"
now_us
ms=$(( (REPLY - T_START) / 1000 ))
ok=true; [ "$code" = 0 ] || ok=false
emit "{\"event\":\"summary\",\"ok\":$ok,\"exit_code\":$code,\"downloaded\":$downloaded,\"skipped\":$skipped,\"failed\":$failed,\"bytes\":$bytes,\"ms\":$ms,\"nodes_installed\":$n_done,\"nodes_skipped\":$n_skip,\"nodes_failed\":$n_fail,\"restarted\":$RESTARTED,\"errors\":[$errors]}"
exit "$code"
